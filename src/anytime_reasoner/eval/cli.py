"""``anytime-reasoner eval``: load model and benchmarks, evaluate in one pass, write and print.

Order of work, cheapest checks first: tokenizer (``</think>`` must be one token) → data (a bad
name or file fails before the model loads) → model → grading workers → evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anytime_reasoner.config import EvalConfig
from anytime_reasoner.data.build import load_source
from anytime_reasoner.data.schema import Example
from anytime_reasoner.data.sources import resolve
from anytime_reasoner.errors import UserError
from anytime_reasoner.eval.report import markdown, write_results
from anytime_reasoner.eval.runner import CACHE_FILE, EvalResults, EvalSettings, ResultCache, evaluate, model_fingerprint
from anytime_reasoner.models.engines import load_for_inference
from anytime_reasoner.models.loading import codec_for, load_tokenizer
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier


def load_benchmarks(config: EvalConfig, tokenizer: Any) -> dict[str, list[Example]]:
    """Each ``data`` entry → validated examples (first ``limit``), one summary line each."""
    out: dict[str, list[Example]] = {}
    for source in config.data:
        name = resolve(source, config.data_dir).name
        if name in out:
            raise UserError(f"data: {source!r} is listed twice")
        examples, report = load_source(
            source,
            data_dir=config.data_dir,
            strict=config.strict,
            tokenizer=tokenizer,
            max_prompt_tokens=config.max_prompt_tokens,
            think_start=config.think_start,
        )
        print(report.summary())
        if not examples:
            raise UserError(f"data: {source!r} has no usable problems (see the line above)")
        out[name] = examples[: config.limit] if config.limit else examples
    return out


def settings_of(config: EvalConfig) -> EvalSettings:
    return EvalSettings(
        model=config.model,
        budgets=tuple(config.budgets),
        samples=config.samples,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        batch_size=config.batch_size,
        protocol=config.protocol(),
        model_fingerprint=model_fingerprint(config.model),
        mode=config.mode,
        budget_prompt=config.budget_prompt,
    )


def evaluate_model(config: EvalConfig) -> EvalResults:
    """What ``anytime-reasoner eval`` computes, from Python: tokenizer, benchmarks, model, grader,
    then the one-pass evaluation (resuming from ``out``'s cache); writes nothing else."""
    protocol = config.protocol()
    tokenizer = load_tokenizer(config.tokenizer or config.model)
    codec_for(tokenizer, protocol)
    benchmarks = load_benchmarks(config, tokenizer)
    loaded = load_for_inference(config.model, tokenizer, config.dtype, config.device, protocol, config.engine)
    settings = settings_of(config)
    cache = ResultCache(Path(config.out) / CACHE_FILE, settings.key())
    grading = GraderSettings.from_protocol(protocol, timeout=config.grade_timeout)
    with MathVerifier(grading) as verifier:
        results = evaluate(
            loaded.engine,
            loaded.codec,
            verifier,
            benchmarks,
            settings,
            prior=config.prior,
            cache=cache,
            progress=config.progress,
        )
    return results


def run_eval(config: EvalConfig) -> int:
    """``anytime-reasoner eval``: evaluate, write ``results.json``/``.csv``/``.md``, print the table."""
    results = evaluate_model(config)
    paths = write_results(results, config.out)
    print(markdown(results))
    print(
        f"{results.chunks_run} chunk(s) generated, {results.chunks_cached} from cache, {results.seconds:.1f}s; "
        f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name}"
    )
    return 0
