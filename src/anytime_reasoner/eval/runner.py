"""One-pass anytime evaluation (docs/ALGORITHM.md §9) with a resumable per-problem cache.

For each benchmark, problems are taken in fixed chunks of ``batch_size``; each chunk is ONE
anytime rollout (``rollout.anytime.anytime_rollout``) with G = ``samples`` thinkings per problem,
A = 1 summary per budget and the evaluation grid as budgets: every thinking is generated once, up
to the largest budget, and cut at every budget — never regenerated per budget.

Resuming: each finished chunk appends one JSON line per problem to ``cache.jsonl`` (settings key,
benchmark, id, a fingerprint of the row, rewards ``[K][S]``, thinking lengths). A rerun with the
same settings skips chunks whose problems are all cached. Each chunk's sampling seed is derived
from (seed, benchmark, chunk index), not from what ran before, so an interrupted-then-resumed run
gives exactly the results of an uninterrupted one. Chunks are fixed by ``batch_size``, which is
therefore part of the settings key; the prior is not (it only weighs the cached rewards).

Two modes (``EvalSettings.mode``):

- ``anytime`` (default, every method): the one pass above.
- ``prompt-budget`` (methods told their budget, e.g. L1): one generation per budget b, with the
  budget sentence (``budget_prompt``, ``{n}`` = b) appended to the question, the thinking capped at
  b and a forced summary if it did not close itself — the anytime protocol at a single budget.
  It costs S generations instead of one.

Both record the thinking tokens each sample spent at each budget (``ProblemResult.used``: the
cut's length), so a method is also judged by what it spends.

Departures: the protocol is docs/ALGORITHM.md §9's; what it leaves open is fixed here — thinking lengths count
the sampled ``</think>``; a thinking ended by EOS scores 0 at every budget at or past its end (the
rollout's format rule: those cuts hold the EOS), while its earlier cuts are graded as usual; samples of one problem depend on (seed, batch_size) because a chunk is sampled as a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anytime_reasoner.algo.budgets import BudgetPlan, prior_weights
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import encode_prompt, with_budget
from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.base import GenerationEngine
from anytime_reasoner.eval.metrics import BenchmarkScores, ProblemResult, Scores, average_scores, score_benchmark
from anytime_reasoner.protocol import BUDGET_PROMPT, AnytimeProtocol
from anytime_reasoner.rewards.base import Verifier
from anytime_reasoner.rollout.anytime import RolloutParams, anytime_rollout
from anytime_reasoner.seeding import derive_seed

CACHE_FILE = "cache.jsonl"


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the sampled rewards (and so keys the cache)."""

    model: str
    budgets: tuple[int, ...]
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    protocol: AnytimeProtocol = field(default_factory=AnytimeProtocol)  # inserted texts, summary cap
    model_fingerprint: str = ""  # sizes/mtimes of a local model's weight files
    mode: str = "anytime"  # anytime | prompt-budget
    budget_prompt: str = BUDGET_PROMPT  # prompt-budget mode: the sentence stating b

    def as_json(self) -> dict[str, Any]:
        """The settings as a flat dict, laid out as before the protocol was one object (the cache
        key and ``results.json`` keep their form): the protocol's summary cap, cut marker and
        answer delimiter appear as top-level keys; its think markers are not part of it."""
        p = self.protocol
        mode = {"mode": self.mode, "budget_prompt": self.budget_prompt} if self.mode != "anytime" else {}
        return {
            "model": self.model,
            "budgets": self.budgets,
            "samples": self.samples,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "summary_max_tokens": p.summary_max_tokens,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "cut_marker": p.cut_marker,
            "answer_delimiter": p.answer_delimiter,
            "model_fingerprint": self.model_fingerprint,
            **mode,
        }

    def key(self) -> str:
        blob = json.dumps(self.as_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class EvalResults:
    settings: EvalSettings
    prior: str | list[float]
    probs: tuple[float, ...]
    benchmarks: dict[str, BenchmarkScores]
    average: Scores
    problems: dict[str, list[ProblemResult]]
    chunks_run: int = 0
    chunks_cached: int = 0
    seconds: float = 0.0


@dataclass
class ResultCache:
    """Append-only JSONL of :class:`ProblemResult` rows under one settings key."""

    path: Path
    key: str
    _rows: dict[tuple[str, str, str], ProblemResult] = field(default_factory=dict, init=False)

    def load(self) -> ResultCache:
        """Read valid rows of this key (a half-written last line or another key is ignored)."""
        self._rows.clear()
        if not self.path.is_file():
            return self
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                    if row.get("settings") == self.key:
                        result = ProblemResult.from_json(row)
                        self._rows[(result.benchmark, result.id, result.fingerprint)] = result
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        return self

    def get(self, benchmark: str, example: Example) -> ProblemResult | None:
        return self._rows.get((benchmark, example.id, example.fingerprint()))

    def append(self, results: Sequence[ProblemResult]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for r in results:
                handle.write(json.dumps({"settings": self.key, **r.to_json()}, ensure_ascii=False) + "\n")
                self._rows[(r.benchmark, r.id, r.fingerprint)] = r
            handle.flush()
            os.fsync(handle.fileno())


def chunk_seed(seed: int, benchmark: str, index: int) -> int:
    """The sampling seed of chunk ``index`` of a benchmark: independent of what ran before."""
    return derive_seed(seed, "eval", benchmark, index)


def chunks(examples: Sequence[Example], size: int) -> Iterator[tuple[int, Sequence[Example]]]:
    for index, start in enumerate(range(0, len(examples), size)):
        yield index, examples[start : start + size]


def _params(settings: EvalSettings, seed: int) -> RolloutParams:
    """Evaluation sampling: G = samples, A = 1, the settings' temperature, top-p and protocol."""
    return RolloutParams(
        n_thinking=settings.samples,
        n_summary=1,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=seed,
        protocol=settings.protocol,
    )


def run_chunk(
    engine: GenerationEngine,
    codec: TokenizerCodec,
    verifier: Verifier,
    benchmark: str,
    index: int,
    examples: Sequence[Example],
    settings: EvalSettings,
) -> list[ProblemResult]:
    """ONE anytime rollout for a chunk: G = samples, A = 1, budgets = the grid (prompt-budget
    mode: one rollout per budget, :func:`run_prompt_budget_chunk`)."""
    if settings.mode == "prompt-budget":
        return run_prompt_budget_chunk(engine, codec, verifier, benchmark, index, examples, settings)
    plan = BudgetPlan(settings.budgets, prior_weights("uniform", settings.budgets))
    params = _params(settings, chunk_seed(settings.seed, benchmark, index))
    prompts = [encode_prompt(codec.tokenizer, e.messages, codec.think_start) for e in examples]
    batch = anytime_rollout(engine, codec, prompts, [list(e.ground_truths) for e in examples], plan, params, verifier)
    return [
        ProblemResult(
            benchmark=benchmark,
            id=e.id,
            fingerprint=e.fingerprint(),
            correct=tuple(tuple(t.summaries[s][0].reward for s in range(len(plan))) for t in row),
            lengths=tuple(t.length for t in row),
            closed=tuple(t.closed for t in row),
            used=tuple(tuple(t.cuts) for t in row),
        )
        for e, row in zip(examples, batch.thinkings, strict=False)
    ]


def run_prompt_budget_chunk(
    engine: GenerationEngine,
    codec: TokenizerCodec,
    verifier: Verifier,
    benchmark: str,
    index: int,
    examples: Sequence[Example],
    settings: EvalSettings,
) -> list[ProblemResult]:
    """One single-budget anytime rollout per budget b, each prompt stating b; the thinking
    lengths and closed flags reported are those of the largest budget's generation."""
    truths = [list(e.ground_truths) for e in examples]
    per_budget = []  # [S] of [B][K] thinkings
    for budget in settings.budgets:
        params = _params(settings, derive_seed(chunk_seed(settings.seed, benchmark, index), "budget", budget))
        prompts = [
            encode_prompt(codec.tokenizer, with_budget(e.messages, settings.budget_prompt, budget), codec.think_start)
            for e in examples
        ]
        plan = BudgetPlan((budget,), (1.0,))
        per_budget.append(anytime_rollout(engine, codec, prompts, truths, plan, params, verifier).thinkings)
    results = []
    for b, e in enumerate(examples):
        samples = range(settings.samples)
        last = per_budget[-1][b]
        results.append(
            ProblemResult(
                benchmark=benchmark,
                id=e.id,
                fingerprint=e.fingerprint(),
                correct=tuple(tuple(rows[b][k].summaries[0][0].reward for rows in per_budget) for k in samples),
                lengths=tuple(t.length for t in last),
                closed=tuple(t.closed for t in last),
                used=tuple(tuple(rows[b][k].cuts[0] for rows in per_budget) for k in samples),
            )
        )
    return results


def evaluate(
    engine: GenerationEngine,
    codec: TokenizerCodec,
    verifier: Verifier,
    benchmarks: Mapping[str, Sequence[Example]],
    settings: EvalSettings,
    *,
    prior: str | Sequence[float] = "uniform",
    cache: ResultCache | None = None,
    progress: bool = False,
) -> EvalResults:
    """Evaluate every benchmark at every budget of ``settings.budgets`` (see module docstring)."""
    prior = prior if isinstance(prior, str) else [float(w) for w in prior]
    probs = prior_weights(prior, settings.budgets)
    empty = [name for name, examples in benchmarks.items() if not examples]
    if empty:
        raise ValueError(f"data: benchmark {empty[0]!r} has no problems left to evaluate")
    if cache is not None:
        cache.load()
    start = time.perf_counter()
    problems: dict[str, list[ProblemResult]] = {}
    run = cached = 0
    total = sum(len(v) for v in benchmarks.values())
    with tqdm(total=total, disable=not progress, unit="problem", desc="eval", dynamic_ncols=True) as bar:
        for name, examples in benchmarks.items():
            bar.set_postfix_str(name)
            problems[name] = []
            for index, chunk in chunks(examples, settings.batch_size):
                rows = _from_cache(cache, name, chunk)
                if rows is None:
                    rows = run_chunk(engine, codec, verifier, name, index, chunk, settings)
                    run += 1
                    if cache is not None:
                        cache.append(rows)
                else:
                    cached += 1
                problems[name].extend(rows)
                bar.update(len(chunk))
    scores = {name: score_benchmark(rows, probs) for name, rows in problems.items()}
    return EvalResults(
        settings=settings,
        prior=prior,
        probs=probs,
        benchmarks=scores,
        average=average_scores(scores, probs),
        problems=problems,
        chunks_run=run,
        chunks_cached=cached,
        seconds=time.perf_counter() - start,
    )


def _from_cache(cache: ResultCache | None, benchmark: str, chunk: Sequence[Example]) -> list[ProblemResult] | None:
    """The chunk's cached rows when every problem of it is cached, else None (rerun it whole)."""
    if cache is None:
        return None
    found = [cache.get(benchmark, e) for e in chunk]
    return None if any(r is None for r in found) else found  # type: ignore[return-value]


def model_fingerprint(path: str) -> str:
    """Sizes and mtimes of a local model folder's weight/config files ('' for a hub name)."""
    folder = Path(path)
    if not folder.is_dir():
        return ""
    parts = [
        f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
        for p in sorted(folder.iterdir())
        if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def settings_json(results: EvalResults) -> dict[str, Any]:
    s = results.settings.as_json()
    s["budgets"] = list(results.settings.budgets)
    s["prior"] = results.prior
    s["prior_weights"] = list(results.probs)
    return s
