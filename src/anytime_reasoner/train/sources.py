"""Where training and validation questions come from.

Training is counted in steps, never epochs: step t (t >= 1, the trainer's first step is 1) draws
its questions deterministically from (seed, t), so a resumed run continues with exactly the
questions it would have seen, and a run never silently does zero steps at an epoch boundary
(docs/ALGORITHM.md §10). A finite dataset of n rows is read in passes: pass e is one permutation of all n rows,
seeded from (seed, e), cut into ceil(n / size) consecutive batches, so every row is visited exactly
once per pass and never twice within a batch. The last batch of a pass holds the n mod size
remaining rows (it is shorter when size does not divide n); when size > n every step is one whole
pass of n rows.

Refills (DAPO's dynamic sampling, ``rollout.dynamic_sampling``): round k ≥ 1 of step t draws
``size`` more questions from (seed, t, k) alone — fresh ones from the synthetic stream, a seeded
sample without replacement of a finite set. Departure from DAPO, which reads the data loader's
next batches: there a step's questions depend on how many refills earlier steps took; here step t's
questions still depend only on (seed, t), so a resumed run replays them exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from anytime_reasoner.data.schema import Example
from anytime_reasoner.seeding import derive_seed
from anytime_reasoner.tasks.synthetic import TaskSpec, synthetic_example, train_stream


class QuestionSource(Protocol):
    def batch(self, step: int, size: int) -> list[Example]:
        """The questions of RL step ``step`` (``step`` >= 1; deterministic in step).

        A finite source may return fewer than ``size`` questions (the last batch of a pass).
        """
        ...

    def refill(self, step: int, round: int, size: int) -> list[Example]:
        """``size`` more questions for refill ``round`` (>= 1) of step ``step`` (deterministic in both)."""
        ...


@dataclass(frozen=True)
class FiniteSource:
    """Cycles a fixed list of n examples in reshuffled passes (epochs).

    Pass e is ``random.Random(f"{seed}:{e}")``'s shuffle of ``range(n)``. Step t (t >= 1) is
    batch p = (t - 1) % steps_per_epoch of pass e = (t - 1) // steps_per_epoch, i.e. rows
    ``perm_e[p * size:(p + 1) * size]``, with steps_per_epoch = ceil(n / size). The last batch of
    a pass holds the n mod size remaining rows (all of them when size divides n), so a pass
    visits every row exactly once; if size > n every step is one full pass of n rows.
    """

    examples: Sequence[Example]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError("data.train: the training set is empty")

    def steps_per_epoch(self, size: int) -> int:
        """How many steps of ``size`` questions one pass over the examples takes: ceil(n / size)."""
        _check_size(size)
        return -(-len(self.examples) // size)

    def epoch_of(self, step: int, size: int) -> int:
        """The pass (0, 1, 2, ...) that step ``step`` (>= 1) reads from."""
        _check_step(step)
        return (step - 1) // self.steps_per_epoch(size)

    def batch(self, step: int, size: int) -> list[Example]:
        _check_step(step)
        per_epoch = self.steps_per_epoch(size)
        epoch, position = divmod(step - 1, per_epoch)
        order = self._permutation(epoch)
        return [self.examples[i] for i in order[position * size : (position + 1) * size]]

    def refill(self, step: int, round: int, size: int) -> list[Example]:
        """``min(size, n)`` rows sampled without replacement from ``random.Random(f"{seed}:{step}:refill:{round}")``."""
        _check_step(step)
        _check_size(size)
        picked = random.Random(f"{self.seed}:{step}:refill:{round}").sample(
            range(len(self.examples)), min(size, len(self.examples))
        )
        return [self.examples[i] for i in picked]

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order


def _check_step(step: int) -> None:
    if step < 1:
        raise ValueError(f"source.batch: step counts from 1, got step={step}")


def _check_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"source.batch: batch size must be >= 1, got size={size}")


@dataclass(frozen=True)
class SyntheticSource:
    """The embedded synthetic task: an unbounded stream, fresh questions every step."""

    seed: int = 0
    spec: TaskSpec | None = None  # None: the task's defaults

    def batch(self, step: int, size: int) -> list[Example]:
        stream = train_stream(seed=derive_seed(self.seed, step, "questions"), spec=self.spec or TaskSpec())
        return [synthetic_example(next(stream), f"train-{step}-{i}") for i in range(size)]

    def refill(self, step: int, round: int, size: int) -> list[Example]:
        stream = train_stream(seed=derive_seed(self.seed, step, "questions", "refill", round), spec=self.spec or TaskSpec())
        return [synthetic_example(next(stream), f"train-{step}-r{round}-{i}") for i in range(size)]
