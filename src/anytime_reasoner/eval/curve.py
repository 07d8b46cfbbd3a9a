"""The anytime curve of a model on the embedded task's problems, through the project's evaluation.

:func:`anytime_curve` is the task's quick check of a base (or trained) model, and it is exactly
``anytime-reasoner eval`` on those problems: the problems become the data pipeline's rows
(``data.schema.Example.from_problem``: question + docs/ALGORITHM.md §8 instruction), the settings come from
an :class:`~anytime_reasoner.config.EvalConfig` through ``eval.cli.settings_of`` (its cut
protocol included), and :func:`anytime_reasoner.eval.runner.evaluate` runs one anytime
rollout per chunk — every thinking sampled once up to the largest budget and cut at each budget —
graded by the real :class:`~anytime_reasoner.rewards.grader.MathVerifier` (the synthetic answers
are integers, which it decides). Only the model and tokenizer are already in memory instead of
loaded from ``model=``. The rows and the benchmark name (which seeds the chunks) are those of the
demo's held-out file, so the command line gives the same numbers, draw for draw, with
``heldout.jsonl`` holding :func:`problem_rows` (as ``demo.write_held_out`` writes it)::

    anytime-reasoner eval model=MODEL_DIR data=heldout.jsonl budgets=12:96:12 samples=1 \\
        temperature=0.6 summary_max_tokens=16 batch_size=50 device=cpu

There is no second sampler, grader or budget parser here: a thinking ended by EOS before a budget
scores 0, a chunk's samples are seeded by (seed, benchmark, chunk) and the prompt always carries the
instruction, all as in every evaluation. The teacher's own full-budget accuracy, the ceiling a
distilled base model approaches, is :func:`anytime_reasoner.tasks.synthetic.teacher_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anytime_reasoner.config import EvalConfig
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.eval.cli import settings_of
from anytime_reasoner.eval.runner import EvalResults, evaluate
from anytime_reasoner.models.loading import codec_for
from anytime_reasoner.rewards.base import Verifier
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier
from anytime_reasoner.tasks.synthetic import Problem, held_out_examples

BENCHMARK = "heldout"  # the stem of demo.HELD_OUT_FILE: the name ``eval`` gives the demo's held-out set


def problem_rows(problems: Sequence[Problem]) -> list[Example]:
    """The evaluation rows of synthetic problems, as the demo's held-out file holds them."""
    return held_out_examples(list(problems))


def anytime_curve(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    budgets: Sequence[int] | str,
    samples: int = 1,
    seed: int = 0,
    *,
    temperature: float = 0.6,
    summary_max_tokens: int = 16,
    batch_size: int = 50,
    verifier: Verifier | None = None,
) -> EvalResults:
    """Evaluate ``model`` on ``problems`` at every budget (a list or a grid such as ``"12:96:12"``).

    Returns the runner's :class:`~anytime_reasoner.eval.runner.EvalResults`: per-budget accuracy in
    ``.average.accuracy`` (one benchmark, so the average is that benchmark), the anytime score in
    ``.average.anytime``, thinking-length statistics in ``.benchmarks[BENCHMARK].thinking`` and
    per-problem rewards in ``.problems[BENCHMARK]``. ``verifier``: a grader to use instead of a
    fresh :class:`MathVerifier` (which is then closed on return).
    """
    config = EvalConfig(
        model=str(getattr(model, "name_or_path", "") or "in-memory"),
        data=[BENCHMARK],
        budgets=budgets,
        samples=samples,
        seed=seed,
        temperature=temperature,
        summary_max_tokens=summary_max_tokens,
        batch_size=batch_size,
        progress=False,
    )
    # What ``eval.cli.run_eval`` does once the model is loaded (see the module docstring).
    protocol = config.protocol()
    codec = codec_for(tokenizer, protocol)
    engine = TransformersEngine(model, pad_token_id=codec.pad_id)
    benchmarks = {BENCHMARK: problem_rows(problems)}
    if verifier is not None:
        return evaluate(engine, codec, verifier, benchmarks, settings_of(config))
    with MathVerifier(GraderSettings.from_protocol(protocol, timeout=config.grade_timeout)) as own:
        return evaluate(engine, codec, own, benchmarks, settings_of(config))
