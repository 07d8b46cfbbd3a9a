"""Turn raw records into validated :class:`Example` rows, counting what is skipped.

Accepted records:
- raw problems: ``problem`` (or ``question``) text and ``answer`` (or ``ground_truth``): a string,
  a number (``142.0`` → ``"142"``), or a list of those (several ground truths, any match counts);
- rows already in the schema (``prompt`` messages + ``ground_truths``), as ``anytime-reasoner data``
  writes them.

A record is skipped, and counted under one reason, when a field is missing or empty (``missing``),
has the wrong type (``wrong_type``), repeats an earlier problem or id (``duplicate``), or its prompt
is longer than ``max_prompt_tokens`` after the chat template (``too_long``; only with a tokenizer).
With ``strict=True`` the first missing / wrong-type / duplicate record raises :class:`UserError`
naming the source, the row and the field instead. Too-long prompts are always dropped, never
raised: they are a property of the tokenizer, not a defect of the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anytime_reasoner.data.schema import Example, is_row
from anytime_reasoner.errors import UserError

REASONS = ("missing", "wrong_type", "duplicate", "too_long")
PROBLEM_KEYS = ("problem", "question")
ANSWER_KEYS = ("answer", "ground_truth", "ground_truths")


class RowProblem(ValueError):
    """Why one record cannot be used: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, field_name: str, detail: str):
        super().__init__(f"field '{field_name}' {detail}")
        self.reason = reason


@dataclass
class DataReport:
    """What happened to the records of one source."""

    source: str
    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})
    examples_of: dict[str, str] = field(default_factory=dict)  # reason -> first "row i: why"

    def summary(self) -> str:
        counts = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in self.skipped.items())
        line = f"{self.source}: {self.read} read, {self.kept} kept (skipped: {counts})"
        firsts = "; ".join(f"first {r.replace('_', ' ')}: {w}" for r, w in self.examples_of.items())
        return f"{line}; {firsts}" if firsts else line


# ---------------------------------------------------------------------------------------------
# Field checks
# ---------------------------------------------------------------------------------------------


def _answer_text(value: Any, field_name: str) -> str | None:
    """One ground truth as a string; ``None`` when empty."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowProblem(
            "wrong_type", field_name, f"has type {type(value).__name__}; allowed: string, number, or a list of these"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowProblem("wrong_type", field_name, f"is {value}; numbers must be finite")
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def ground_truths_of(value: Any, field_name: str) -> tuple[str, ...]:
    """Normalize an answer field to a non-empty tuple of strings."""
    if value is None:
        raise RowProblem("missing", field_name, "is missing or empty")
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    texts = [t for t in (_answer_text(v, field_name) for v in items) if t is not None]
    if not texts:
        raise RowProblem("missing", field_name, "is missing or empty")
    return tuple(texts)


def _text(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, str]:
    """The first present key among ``keys`` and its non-empty string value."""
    name = next((k for k in keys if k in record), keys[0])
    value = record.get(name)
    if value is None:
        raise RowProblem("missing", name, "is missing or empty")
    if not isinstance(value, str):
        raise RowProblem("wrong_type", name, f"has type {type(value).__name__}; allowed: string")
    if not value.strip():
        raise RowProblem("missing", name, "is missing or empty")
    return name, value


def _messages(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise RowProblem("wrong_type" if value else "missing", "prompt", "must be a non-empty list of {role, content} messages")
    out = []
    for msg in value:
        if not isinstance(msg, Mapping) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise RowProblem("wrong_type", "prompt", "must be a list of {role: string, content: string} messages")
        out.append((msg["role"], msg["content"]))
    if not out[-1][1].strip():
        raise RowProblem("missing", "prompt", "ends with an empty message")
    return tuple(out)


def example_of(record: Any, source: str, index: int) -> Example:
    """One record → :class:`Example`, or :class:`RowProblem`."""
    if not isinstance(record, Mapping):
        raise RowProblem("wrong_type", "<row>", f"is a {type(record).__name__}; each row must be an object")
    if is_row(record):
        prompt = _messages(record["prompt"])
        truths = ground_truths_of(record["ground_truths"], "ground_truths")
        rid = record.get("id", f"{source}-{index}")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise RowProblem("wrong_type", "id", f"has type {type(rid).__name__}; allowed: string or integer")
        data_source = record.get("data_source") or source
        if not isinstance(data_source, str):
            raise RowProblem("wrong_type", "data_source", "must be a string")
        return Example(str(rid), data_source, prompt, truths)
    _, problem = _text(record, PROBLEM_KEYS)
    answer_key = next((k for k in ANSWER_KEYS if k in record), ANSWER_KEYS[0])
    truths = ground_truths_of(record.get(answer_key), answer_key)
    return Example.from_problem(f"{source}-{index}", source, problem.strip(), truths)


# ---------------------------------------------------------------------------------------------
# A whole source
# ---------------------------------------------------------------------------------------------


def build_examples(
    records: Iterable[tuple[str, Any]],
    source: str,
    *,
    strict: bool = False,
    count_tokens: Callable[[Example], int] | None = None,
    max_prompt_tokens: int | None = None,
    seen: dict[str, str] | None = None,
) -> tuple[list[Example], DataReport]:
    """Validate ``(where, record)`` pairs (``where`` is e.g. ``"row 3"``) into examples.

    ``seen`` (prompt text or id → where) carries duplicate detection across several sources.
    ``count_tokens`` measures the templated prompt; rows over ``max_prompt_tokens`` are dropped.
    """
    report = DataReport(source)
    seen = {} if seen is None else seen
    examples: list[Example] = []
    for index, (where, record) in enumerate(records):
        report.read += 1
        try:
            example = example_of(record, source, index)
            _check_duplicate(example, where, source, seen)
        except RowProblem as problem:
            if strict:
                raise UserError(f"{source} {where}: {problem}") from None
            _skip(report, problem.reason, f"{where}: {problem}")
            continue
        if count_tokens is not None and max_prompt_tokens is not None:
            n = count_tokens(example)
            if n > max_prompt_tokens:
                _skip(report, "too_long", f"{where}: prompt has {n} tokens > max_prompt_tokens={max_prompt_tokens}")
                continue
        examples.append(example)
    report.kept = len(examples)
    return examples, report


def _check_duplicate(example: Example, where: str, source: str, seen: dict[str, str]) -> None:
    text_key = "prompt:" + " ".join(example.prompt[-1][1].split())
    id_key = f"id:{example.data_source}/{example.id}"
    for key, what in ((text_key, "prompt"), (id_key, "id")):
        if key in seen:
            raise RowProblem("duplicate", what, f"repeats {seen[key]}")
    seen[text_key] = seen[id_key] = f"{source} {where}"


def _skip(report: DataReport, reason: str, why: str) -> None:
    report.skipped[reason] += 1
    report.examples_of.setdefault(reason, why)
