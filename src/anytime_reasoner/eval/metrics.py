"""Scores of an anytime evaluation (docs/ALGORITHM.md §9), from per-problem, per-sample, per-budget rewards.

For a benchmark with N problems, K samples each and S budgets, ``correct[p][k][s]`` ∈ {0, 1}:

    acc_k[s]   = mean_p correct[p][k][s]          accuracy of sample k at budget s
    accuracy[s] = mean_k acc_k[s]                  reported accuracy (mean over problems and samples)
    std[s]     = population std over k of acc_k[s]  (0 when K = 1)
    anytime    = Σ_s P_s · accuracy[s]             prior-weighted mean over budgets (uniform: plain mean)
    final      = accuracy[S-1]                     the standard task: the largest budget

``anytime_std`` / ``final_std`` are the same std over samples of those scores. The average row
weighs benchmarks equally (the paper's "Average" panel), not by their number of problems.
Pure Python: no torch.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ProblemResult:
    """Rewards of one problem: ``correct[k][s]`` for sample k at budget s; thinking lengths per sample."""

    benchmark: str
    id: str
    fingerprint: str
    correct: tuple[tuple[float, ...], ...]  # [K][S]
    lengths: tuple[int, ...]  # [K] thinking tokens (think-end included when sampled)
    closed: tuple[bool, ...]  # [K] the thinking closed itself with think-end
    used: tuple[tuple[int, ...], ...] = ()  # [K][S] thinking tokens spent at each budget (() in older caches)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "id": self.id,
            "fingerprint": self.fingerprint,
            "correct": [list(row) for row in self.correct],
            "lengths": list(self.lengths),
            "closed": list(self.closed),
            "used": [list(row) for row in self.used],
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ProblemResult:
        return cls(
            benchmark=str(row["benchmark"]),
            id=str(row["id"]),
            fingerprint=str(row["fingerprint"]),
            correct=tuple(tuple(float(x) for x in per_k) for per_k in row["correct"]),
            lengths=tuple(int(x) for x in row["lengths"]),
            closed=tuple(bool(x) for x in row["closed"]),
            used=tuple(tuple(int(x) for x in per_k) for per_k in row.get("used", ())),
        )


@dataclass(frozen=True)
class ThinkingStats:
    mean: float
    median: float
    max: int
    closed_fraction: float  # thinkings that ended with think-end before the largest budget


@dataclass(frozen=True)
class Scores:
    accuracy: tuple[float, ...]  # [S]
    std: tuple[float, ...]  # [S]
    anytime: float
    anytime_std: float
    final: float
    final_std: float

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": list(self.accuracy),
            "std": list(self.std),
            "anytime": self.anytime,
            "anytime_std": self.anytime_std,
            "final": self.final,
            "final_std": self.final_std,
        }


@dataclass(frozen=True)
class BenchmarkScores:
    scores: Scores
    n_problems: int
    n_samples: int
    thinking: ThinkingStats
    per_sample: tuple[tuple[float, ...], ...]  # acc_k[s], [K][S] (for the average row)
    tokens_used: tuple[float, ...] | None = None  # [S] mean thinking tokens spent at each budget

    def to_json(self) -> dict[str, Any]:
        return {
            **self.scores.to_json(),
            "n_problems": self.n_problems,
            "n_samples": self.n_samples,
            "thinking_tokens": asdict(self.thinking),
            "tokens_used": list(self.tokens_used) if self.tokens_used is not None else None,
        }


def _std(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def _weighted(acc: Sequence[float], probs: Sequence[float]) -> float:
    return sum(p * a for p, a in zip(probs, acc, strict=False))


def scores_of(per_sample: Sequence[Sequence[float]], probs: Sequence[float]) -> Scores:
    """Scores from ``per_sample[k][s]`` accuracies (K ≥ 1 rows of S budgets)."""
    k, s = len(per_sample), len(probs)
    if k == 0 or any(len(row) != s for row in per_sample):
        raise ValueError(f"per_sample: expected K >= 1 rows of {s} budgets")
    columns = list(zip(*per_sample, strict=False))  # [S][K]
    anytimes = [_weighted(row, probs) for row in per_sample]
    finals = [row[-1] for row in per_sample]
    return Scores(
        accuracy=tuple(statistics.fmean(c) for c in columns),
        std=tuple(_std(c) for c in columns),
        anytime=statistics.fmean(anytimes),
        anytime_std=_std(anytimes),
        final=statistics.fmean(finals),
        final_std=_std(finals),
    )


def score_benchmark(results: Sequence[ProblemResult], probs: Sequence[float]) -> BenchmarkScores:
    """Scores of one benchmark; every problem must have the same K samples and S budgets."""
    if not results:
        raise ValueError("score_benchmark: no problems")
    k = len(results[0].correct)
    if any(len(r.correct) != k for r in results):
        raise ValueError("score_benchmark: problems have different numbers of samples")
    per_sample = tuple(
        tuple(statistics.fmean(col) for col in zip(*(r.correct[i] for r in results), strict=False)) for i in range(k)
    )
    lengths = [n for r in results for n in r.lengths]
    closed = [c for r in results for c in r.closed]
    thinking = ThinkingStats(
        mean=statistics.fmean(lengths),
        median=float(statistics.median(lengths)),
        max=max(lengths),
        closed_fraction=sum(closed) / len(closed),
    )
    return BenchmarkScores(scores_of(per_sample, probs), len(results), k, thinking, per_sample, tokens_used(results))


def tokens_used(results: Sequence[ProblemResult]) -> tuple[float, ...] | None:
    """Mean thinking tokens spent per budget over problems and samples (None if a row lacks them)."""
    if any(not r.used for r in results):
        return None
    rows = [row for r in results for row in r.used]  # [N·K][S]
    return tuple(statistics.fmean(col) for col in zip(*rows, strict=True))


def average_tokens(benchmarks: Mapping[str, BenchmarkScores]) -> tuple[float, ...] | None:
    """Equal-weight mean over benchmarks of the tokens spent per budget."""
    per = [b.tokens_used for b in benchmarks.values()]
    if any(t is None for t in per):
        return None
    return tuple(statistics.fmean(col) for col in zip(*per, strict=True))  # type: ignore[arg-type]


def average_scores(benchmarks: Mapping[str, BenchmarkScores], probs: Sequence[float]) -> Scores:
    """Equal-weight mean over benchmarks, per sample index (all benchmarks share K)."""
    ks = {b.n_samples for b in benchmarks.values()}
    if len(ks) != 1:
        raise ValueError(f"average: benchmarks have different sample counts {sorted(ks)}")
    k = ks.pop()
    per_sample = [
        [statistics.fmean(col) for col in zip(*(b.per_sample[i] for b in benchmarks.values()), strict=False)] for i in range(k)
    ]
    return scores_of(per_sample, probs)
