"""The one row schema shared by training and evaluation sets.

A row is an :class:`Example`: chat messages for the prompt (one user turn: the problem followed by
the instruction of docs/ALGORITHM.md §8), the ground truths (strings; any match counts, docs/ALGORITHM.md §4), the data
source it came from and an id unique within that source. Files written by ``anytime-reasoner data``
hold exactly :meth:`Example.to_row` per line and are read back unchanged.

Pure Python: no torch, no tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
ROW_FIELDS = ("id", "data_source", "prompt", "ground_truths")


@dataclass(frozen=True)
class Example:
    """One problem, ready for the chat template."""

    id: str
    data_source: str
    prompt: tuple[tuple[str, str], ...]  # ((role, content), ...)
    ground_truths: tuple[str, ...]

    @classmethod
    def from_problem(cls, id: str, data_source: str, problem: str, ground_truths: tuple[str, ...]) -> Example:
        return cls(id, data_source, (("user", problem + INSTRUCTION),), ground_truths)

    @property
    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages, for ``tokenizer.apply_chat_template``."""
        return [{"role": role, "content": content} for role, content in self.prompt]

    @property
    def question(self) -> str:
        """The last user message without the instruction suffix (for display)."""
        content = self.prompt[-1][1]
        return content[: -len(INSTRUCTION)] if content.endswith(INSTRUCTION) else content

    def fingerprint(self) -> str:
        """A short hash of prompt and ground truths: a cached result is reused only for the same row."""
        text = json.dumps([self.prompt, self.ground_truths], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "data_source": self.data_source,
            "prompt": self.messages,
            "ground_truths": list(self.ground_truths),
        }


def is_row(record: Mapping[str, Any]) -> bool:
    """True for a record already in this schema (it has ``prompt`` and ``ground_truths``)."""
    return "prompt" in record and "ground_truths" in record
