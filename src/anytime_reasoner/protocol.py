"""The anytime cut protocol (docs/ALGORITHM.md §3): the one place its texts and the summary cap are defined.

The bottom of the package (docs/ARCHITECTURE.md): it imports nothing of ``anytime_reasoner``, so the
configuration, the data pipeline, the grader, the rollout and the trainer all read the same texts.

A thinking opens after ``think_start`` and closes with ``think_end`` (one token each). To read an
answer at a budget, the thinking is cut there and forced text is inserted before a summary is
sampled (at most ``summary_max_tokens`` new tokens):

- a thinking that closed itself within the budget: ``answer_delimiter``;
- a thinking cut inside (or unfinished, or ended by EOS): ``cut_marker`` + ``think_end`` +
  ``answer_delimiter``.

The grader then reads the summary after the last ``think_end`` and the paragraph starting with
:attr:`AnytimeProtocol.answer_marker` (the delimiter without its leading newlines).

:class:`AnytimeProtocol` is what a serving-side processor would use: it carries exactly what a
server needs to cut a thinking at a budget and force the summary the model was trained on (the
token ids: :meth:`AnytimeProtocol.inserted_ids`, given the tokenizer facts of
:class:`anytime_reasoner.data.codec.TokenizerCodec`). Training, evaluation, ``ask`` and the grader
all build it from their configuration (:meth:`AnytimeProtocol.from_config`); the module constants
below are the defaults of every configuration key that spells one of its fields.

:data:`BUDGET_PROMPT` is the other text a model is trained on: the budget sentence that methods told
their budget (L1) find appended to the question.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

THINK_START = "<think>"
THINK_END = "</think>"
CUT_MARKER = "...\n\n...\n\n"
ANSWER_DELIMITER = "\n\n**Final Answer**\n"
SUMMARY_MAX_TOKENS = 118
BUDGET_PROMPT = "Think for {n} tokens."  # L1's budget sentence (training targets, prompt-budget evaluation)

# One-line descriptions of the fields, for the configuration keys that spell them (``--help``).
DESCRIPTIONS = {
    "think_start": "text that opens the thinking (must be one token); the prompt ends with it",
    "think_end": "text that closes the thinking (must be one token)",
    "cut_marker": "text inserted after a cut, before think_end",
    "answer_delimiter": "text inserted before a summary",
    "summary_max_tokens": "new-token cap of each summary",
}


def answer_marker_of(answer_delimiter: str) -> str:
    """The paragraph marker the grader looks for: the inserted delimiter without leading newlines."""
    return answer_delimiter.lstrip("\n") or answer_delimiter


class Encoder(Protocol):
    """What :meth:`AnytimeProtocol.inserted_ids` needs of a tokenizer codec
    (:class:`anytime_reasoner.data.codec.TokenizerCodec` is one)."""

    @property
    def think_end_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class InsertedIds:
    """The forced (never sampled, never trained) token ids placed between a cut and its summary."""

    closed: tuple[int, ...]  # after a thinking that closed itself: the answer delimiter
    forced: tuple[int, ...]  # after a cut: cut marker + think-end + answer delimiter

    def of(self, natural: bool) -> tuple[int, ...]:
        return self.closed if natural else self.forced


@dataclass(frozen=True)
class AnytimeProtocol:
    """The texts of the cut protocol and the summary cap (see the module docstring)."""

    think_start: str = THINK_START
    think_end: str = THINK_END
    cut_marker: str = CUT_MARKER
    answer_delimiter: str = ANSWER_DELIMITER
    summary_max_tokens: int = SUMMARY_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.summary_max_tokens < 1:
            raise ValueError(f"summary_max_tokens: must be >= 1 (got {self.summary_max_tokens})")

    @classmethod
    def from_config(cls, *sections: Any, **overrides: Any) -> AnytimeProtocol:
        """The protocol spelled by configuration sections: each field is read from the last
        section that has an attribute of its name (later sections win), then ``overrides``;
        fields no section spells keep the defaults. E.g. training's ``model`` section holds the
        think markers and its ``rollout`` section the rest."""
        values: dict[str, Any] = {}
        for section in sections:
            for f in fields(cls):
                if hasattr(section, f.name):
                    values[f.name] = getattr(section, f.name)
        values.update(overrides)
        return cls(**values)

    @property
    def answer_marker(self) -> str:
        """What the grader looks for at the start of the answer paragraph (``**Final Answer**\\n``)."""
        return answer_marker_of(self.answer_delimiter)

    def inserted_ids(self, codec: Encoder) -> InsertedIds:
        """The forced token ids after a cut. Each text is encoded on its own (as the model was
        trained); the think-end id is the codec's."""
        delimiter = tuple(codec.encode(self.answer_delimiter))
        marker = tuple(codec.encode(self.cut_marker))
        return InsertedIds(closed=delimiter, forced=marker + (codec.think_end_id,) + delimiter)
