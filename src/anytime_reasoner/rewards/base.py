"""The narrow verifier interface the rollout and evaluation use.

A verifier grades a batch of responses (the model's text after the prompt: thinking, inserted
text, ``</think>``, summary) against their ground truths and returns one :class:`Grade` each.
Implementations must treat responses as untrusted input: never executed, bounded in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Grade:
    correct: bool  # the extracted answer matches a ground truth
    well_formed: bool  # exactly one think-end marker in the response
    extracted: str | None  # the answer found in the Final Answer paragraph, if any
    timed_out: bool = False  # grading ran past its time limit (counted as wrong)

    @property
    def reward(self) -> float:
        """1.0 if correct and well-formed, else 0.0 (docs/ALGORITHM.md §4)."""
        return 1.0 if (self.correct and self.well_formed) else 0.0


class Verifier(Protocol):
    def grade(self, responses: Sequence[str], ground_truths: Sequence[Sequence[str]]) -> list[Grade]:
        """One :class:`Grade` per response, in order."""
        ...
