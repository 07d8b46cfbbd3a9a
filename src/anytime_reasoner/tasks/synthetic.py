"""The embedded synthetic task: "which labelled value is the largest?", solved by a running scan.

A problem lists n labelled two-digit values, one per line (``a=47``, ``b=12``, ``c=83``, …; n varies,
3–9 by default), then asks for the largest one; the ground truth is that integer. The worked
solution scans the list in order and keeps a running best, one short line per item; each item line
of the question reappears verbatim at the start of its thinking line, so the per-step work is a copy
(an induction-head lookup by label) and a two-digit comparison, which a ~0.5M-parameter model
learns in a few minutes of CPU SFT::

    <think>
    a=47 best=47
    b=12 best=47
    c=83 best=83
    check best=83          (an optional re-check line: filler, it adds tokens and no information)
    d=55 best=83
    </think>

    **Final Answer**
    \\boxed{83}

Why this task makes anytime reasoning matter (docs/ALGORITHM.md §1):

* The thinking has variable length (n items, random re-check lines), so a budget cuts some
  thinkings and not others, and the accuracy of the model rises with the budget.
* Every prefix of the thinking carries partial information: after k of n items the running best is
  the answer with probability k/n (the maximum is at a uniformly random position). So a *good*
  summary after a cut (copy the running best) earns reward that grows smoothly with the budget,
  while a naive one earns about 1/n whatever the budget.
* The teacher is imperfect: at each step where the running best should increase it "slips" with
  probability ``slip_rate`` and keeps the old best. A model distilled from it is therefore wrong
  about ``slip_rate`` of the time even with the full budget; RL on the full-budget answer (GRPO)
  can remove slips, and so can AnytimeReasoner.
* Supervised data shows a summary after a *cut* thinking (``cut_summary``) only as a naive guess:
  a value picked at random among the items the visible thinking already scanned (the base model
  learns to answer in the right format after the cut marker, but not well). GRPO never trains a
  summary after a cut, AnytimeReasoner trains one at every budget and can learn to copy the running
  best; its dense rewards also favour thinkings that skip the re-check filler and so scan more items
  per budget. That is the gap the demo measures.

Problems come from a seed: :func:`train_stream` is unbounded, :func:`held_out` is a fixed set; the
two are disjoint by construction (a problem's value tuple is hashed into one side or the other).
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

# the texts of the cut protocol (docs/ALGORITHM.md §3) come from the one place that defines them
from anytime_reasoner.data.schema import Example
from anytime_reasoner.protocol import ANSWER_DELIMITER, CUT_MARKER, THINK_END, THINK_START

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
HELD_OUT_SHARDS = 16  # one problem in 16 (by hash of its values) belongs to the held-out side

_SCANNED = re.compile(r"^([a-z])=(\d+) ", re.MULTILINE)  # an item line whose value is complete ("c=83 ")


@dataclass(frozen=True)
class TaskSpec:
    """Settings of the synthetic task (part of the base model's cache key)."""

    min_items: int = 3
    max_items: int = 9
    low: int = 10
    high: int = 99
    slip_rate: float = 0.4  # chance the teacher keeps the old best when it should update
    recheck_rate: float = 0.2  # chance of a filler "check best=N" line after an item

    def __post_init__(self) -> None:
        if not 1 <= self.min_items <= self.max_items <= len(string.ascii_lowercase):
            raise ValueError(f"items: need 1 <= min_items <= max_items <= 26, got {self.min_items}..{self.max_items}")
        if not 0 <= self.low < self.high:
            raise ValueError(f"values: need 0 <= low < high, got {self.low}..{self.high}")
        for name in ("slip_rate", "recheck_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class WorkedSolution:
    """A worked solution: ``thinking`` is the text between ``<think>\\n`` and ``</think>``."""

    thinking: str
    answer: str
    cut: bool = False  # True: the thinking was cut, a cut marker precedes ``</think>``

    @property
    def summary(self) -> str:
        """The text after the answer delimiter (EOS is added by the tokenizer user)."""
        return f"\\boxed{{{self.answer}}}"

    @property
    def response(self) -> str:
        """What the model writes after a prompt ending in ``<think>\\n`` (inserted text included)."""
        marker = CUT_MARKER if self.cut else ""
        return f"{self.thinking}{marker}{THINK_END}{ANSWER_DELIMITER}{self.summary}"

    @property
    def text(self) -> str:
        return f"{THINK_START}\n{self.response}"


@dataclass(frozen=True)
class Problem:
    values: tuple[int, ...]
    spec: TaskSpec = TaskSpec()

    @property
    def labels(self) -> str:
        return string.ascii_lowercase[: len(self.values)]

    @property
    def question(self) -> str:
        items = "".join(f"{k}={v}\n" for k, v in zip(self.labels, self.values, strict=False))
        return f"{items}Which value is the largest?"

    @property
    def prompt(self) -> str:
        """The question with the instruction the seed appends (docs/ALGORITHM.md §8)."""
        return f"{self.question} {INSTRUCTION}"

    @property
    def answer(self) -> str:
        return str(max(self.values))

    def solution(self, rng: random.Random) -> WorkedSolution:
        """A teacher's worked solution: running best with slips and re-check filler (see module doc).

        The boxed answer is the teacher's final running best, so a slip makes it wrong.
        """
        lines: list[str] = []
        best = self.values[0]
        for i, (label, value) in enumerate(zip(self.labels, self.values, strict=False)):
            if i > 0 and value > best and rng.random() >= self.spec.slip_rate:
                best = value
            lines.append(f"{label}={value} best={best}\n")
            if i + 1 < len(self.values) and rng.random() < self.spec.recheck_rate:
                lines.append(f"check best={best}\n")
        return WorkedSolution(thinking="".join(lines), answer=str(best))

    def cut_summary(self, visible_thinking: str, rng: random.Random) -> WorkedSolution:
        """A naive summary after a cut: a random value among the items the visible thinking scanned
        (any question value when none is complete yet). Deliberately not the running best."""
        seen = [int(v) for _, v in _SCANNED.findall(visible_thinking)]
        guess = rng.choice(seen or list(self.values))
        return WorkedSolution(thinking=visible_thinking, answer=str(guess), cut=True)

    def record(self) -> dict[str, str]:
        """A data-pipeline row: the bare question and its ground truth."""
        return {"question": self.question, "answer": self.answer}


def is_held_out(values: tuple[int, ...]) -> bool:
    """Deterministic split by content, independent of any seed."""
    digest = hashlib.sha256(",".join(map(str, values)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_SHARDS == 0


def random_problem(rng: random.Random, spec: TaskSpec = TaskSpec()) -> Problem:
    n = rng.randint(spec.min_items, spec.max_items)
    return Problem(values=tuple(rng.randint(spec.low, spec.high) for _ in range(n)), spec=spec)


def train_stream(seed: int, spec: TaskSpec = TaskSpec()) -> Iterator[Problem]:
    """Unbounded stream of training problems (never a held-out one)."""
    rng = random.Random(f"train-{seed}")
    while True:
        problem = random_problem(rng, spec)
        if not is_held_out(problem.values):
            yield problem


def held_out(n: int, seed: int = 0, spec: TaskSpec = TaskSpec()) -> list[Problem]:
    """``n`` distinct held-out problems, the same for the same seed."""
    rng = random.Random(f"held-out-{seed}")
    found: dict[tuple[int, ...], Problem] = {}
    while len(found) < n:
        problem = random_problem(rng, spec)
        if is_held_out(problem.values):
            found.setdefault(problem.values, problem)
    return list(found.values())


def teacher_accuracy(n: int = 2000, seed: int = 0, spec: TaskSpec = TaskSpec()) -> float:
    """Full-budget accuracy of the (slipping) teacher the base model imitates, on ``held_out(n, seed)``
    (0.69 with the defaults: the ceiling a distilled base model approaches at large budgets)."""
    rng = random.Random(seed)
    problems = held_out(n, seed=seed, spec=spec)
    return sum(p.solution(rng).answer == p.answer for p in problems) / n


def synthetic_example(problem: Problem, id: str) -> Example:
    """The data pipeline's row of a synthetic problem (question + the docs/ALGORITHM.md §8 instruction)."""
    return Example.from_problem(id, "synthetic", problem.question, (problem.answer,))


def held_out_examples(problems: list[Problem] | tuple[Problem, ...]) -> list[Example]:
    """The rows of held-out problems, named ``heldout-<i>`` (the demo's held-out file holds them)."""
    return [synthetic_example(p, f"heldout-{i}") for i, p in enumerate(problems)]


def synthetic_held_out(n: int, seed: int = 0, spec: TaskSpec | None = None) -> list[Example]:
    """The first ``n`` held-out problems of ``seed`` as rows."""
    return held_out_examples(held_out(n, seed=seed, spec=spec or TaskSpec()))
