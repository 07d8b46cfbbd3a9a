"""Where training and validation questions come from.

Training is counted in steps, never epochs: step t draws its questions deterministically from
(seed, t), so a resumed run continues with exactly the questions it would have seen, and a run
never silently does zero steps at an epoch boundary (SPEC §10). A finite dataset is reshuffled
every pass with a seed derived from the pass number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, Sequence

from anytime_reasoner.data.schema import Example


class QuestionSource(Protocol):
    def batch(self, step: int, size: int) -> list[Example]:
        """The questions of RL step ``step`` (deterministic in step)."""
        ...


@dataclass(frozen=True)
class FiniteSource:
    """Cycles a fixed list of examples in reshuffled passes."""

    examples: Sequence[Example]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError("data.train: the training set is empty")

    def batch(self, step: int, size: int) -> list[Example]:
        n = len(self.examples)
        start = step * size
        return [self._at(i, n) for i in range(start, start + size)]

    def _at(self, index: int, n: int) -> Example:
        epoch, offset = divmod(index, n)
        order = list(range(n))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return self.examples[order[offset]]


@dataclass(frozen=True)
class SyntheticSource:
    """The embedded synthetic task: an unbounded stream, fresh questions every step."""

    seed: int = 0
    spec: object | None = None  # anytime_reasoner.tasks.synthetic.TaskSpec

    def batch(self, step: int, size: int) -> list[Example]:
        from anytime_reasoner.tasks.synthetic import TaskSpec, train_stream

        stream = train_stream(seed=self.seed * 1_000_003 + step, spec=self.spec or TaskSpec())
        return [synthetic_example(next(stream), f"train-{step}-{i}") for i in range(size)]


def synthetic_example(problem, id: str) -> Example:
    return Example.from_problem(id, "synthetic", problem.question, (problem.answer,))


def synthetic_held_out(n: int, seed: int = 0, spec=None) -> list[Example]:
    from anytime_reasoner.tasks.synthetic import TaskSpec, held_out

    problems = held_out(n, seed=seed, spec=spec or TaskSpec())
    return [synthetic_example(p, f"heldout-{i}") for i, p in enumerate(problems)]
