"""``anytime-reasoner grade input=F.jsonl output=G.jsonl``: grade a file of responses.

Each input line is a JSON object with ``response`` (a string: the model's text after the prompt)
and ``ground_truth`` (a string or a list of strings; any match counts). Blank lines are skipped.
Beyond the brief, a number is accepted wherever a ground-truth string is (benchmark files such as
AMC store answers as numbers); it is graded as its JSON text.

Each output line holds ``correct``, ``well_formed``, ``extracted`` and ``timed_out`` for the input
line at the same position. The printed accuracy counts rewards: correct AND well-formed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from anytime_reasoner.config import GradeConfig
from anytime_reasoner.errors import UserError
from anytime_reasoner.rewards.base import Grade
from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier

SHAPE = "a JSON object with 'response' (a string) and 'ground_truth' (a string or a list of strings)"


@dataclass(frozen=True)
class GradeItem:
    """One input line, validated."""

    line: int
    response: str
    ground_truths: tuple[str, ...]


def run_grade(config: GradeConfig) -> int:
    """Grade ``config.input`` into ``config.output``; print the accuracy; 0 on success."""
    items = read_items(Path(config.input))
    settings = GraderSettings(timeout=config.timeout, workers=config.workers)
    bar = tqdm(total=len(items), desc="grading", unit="answer", disable=not config.progress)
    with MathVerifier(settings) as verifier, bar:
        grades = verifier.grade([item.response for item in items], [item.ground_truths for item in items], progress=bar.update)
    write_grades(Path(config.output), grades)
    print(accuracy_line(grades))
    return 0


def accuracy_line(grades: list[Grade]) -> str:
    """``accuracy 0.750 (3/4)``, plus the count of timed-out answers when there are any."""
    solved = sum(1 for g in grades if g.reward > 0)
    ratio = solved / len(grades) if grades else 0.0
    line = f"accuracy {ratio:.3f} ({solved}/{len(grades)})"
    timed_out = sum(1 for g in grades if g.timed_out)
    return f"{line}, {timed_out} timed out" if timed_out else line


def read_items(path: Path) -> list[GradeItem]:
    """All non-blank lines of ``path``, validated; raise :class:`UserError` on the first bad one."""
    try:
        with path.open(encoding="utf-8") as handle:
            return [parse_line(n, text) for n, text in enumerate(handle, start=1) if text.strip()]
    except FileNotFoundError:
        raise UserError(f"input: file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"input: {path} is a folder; allowed: a JSONL file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"input: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def parse_line(number: int, text: str) -> GradeItem:
    """One input line → :class:`GradeItem`; every error names the line, the field and what is allowed."""
    where = f"line {number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg}); each line must be {SHAPE}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: got {_article(_kind(data))}; each line must be {SHAPE}")
    if "response" not in data:
        raise UserError(f"{where}: 'response' is missing; it must be a string")
    if not isinstance(data["response"], str):
        raise UserError(f"{where}: 'response' must be a string (got {_article(_kind(data['response']))})")
    if "ground_truth" not in data:
        raise UserError(f"{where}: 'ground_truth' is missing; it must be a string or a list of strings")
    return GradeItem(number, data["response"], _truths(where, data["ground_truth"]))


def _truths(where: str, value: Any) -> tuple[str, ...]:
    allowed = f"{where}: 'ground_truth' must be a string or a non-empty list of strings"
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError(f"{allowed} (got an empty list)")
    for item in values:
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            inside = " inside the list" if isinstance(value, list) else ""
            raise UserError(f"{allowed} (got {_article(_kind(item))}{inside})")
    return tuple(item if isinstance(item, str) else json.dumps(item) for item in values)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def write_grades(path: Path, grades: list[Grade]) -> None:
    """One JSON object per grade, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for g in grades:
            row = {"correct": g.correct, "well_formed": g.well_formed, "extracted": g.extracted, "timed_out": g.timed_out}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
