"""``anytime-reasoner grade`` end to end, and its one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anytime_reasoner.cli import main
from anytime_reasoner.errors import UserError
from anytime_reasoner.rewards.cli import parse_line

FA = "\n\n**Final Answer**\n"


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _grade(tmp_path: Path, rows: list[object], *extra: str) -> tuple[int, Path]:
    source = _write(tmp_path / "in.jsonl", rows)
    target = tmp_path / "out" / "grades.jsonl"
    code = main(["grade", f"input={source}", f"output={target}", "progress=false", "workers=1", *extra])
    return code, target


def test_grades_a_file(tmp_path: Path, capsys):
    rows = [
        {"response": "think</think>" + FA + "$\\boxed{\\dfrac{3}{4}}$", "ground_truth": "0.75"},
        {"response": "think</think>" + FA + "\\boxed{2}", "ground_truth": "\\frac{1}{2}"},
        {"response": "think without end" + FA + "\\boxed{7}", "ground_truth": ["7"]},
        "",
        {"response": "cut...\n\n...\n\n</think>" + FA + "\\boxed{x=3}", "ground_truth": ["4", "3"]},
        {"response": "think</think>" + FA + "\\boxed{142}", "ground_truth": 142.0},
    ]
    code, target = _grade(tmp_path, rows)
    assert code == 0
    out = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert out == [
        {"correct": True, "well_formed": True, "extracted": "\\dfrac{3}{4}", "timed_out": False},
        {"correct": False, "well_formed": True, "extracted": "2", "timed_out": False},
        {"correct": True, "well_formed": False, "extracted": "7", "timed_out": False},
        {"correct": True, "well_formed": True, "extracted": "x=3", "timed_out": False},
        {"correct": True, "well_formed": True, "extracted": "142", "timed_out": False},
    ]
    assert capsys.readouterr().out.strip() == "accuracy 0.600 (3/5)"


def test_timeouts_are_counted(tmp_path: Path, capsys):
    rows = [{"response": "t</think>" + FA + "\\boxed{9^{9^{9}}}", "ground_truth": "1"}]
    code, target = _grade(tmp_path, rows, "timeout=1")
    assert code == 0
    assert json.loads(target.read_text(encoding="utf-8"))["timed_out"] is True
    assert capsys.readouterr().out.strip() == "accuracy 0.000 (0/1), 1 timed out"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"response": "a", "ground_truth": ', "line 2: not valid JSON (Expecting value); each line must be"),
        ('["a", "b"]', "line 2: got a list; each line must be a JSON object with 'response'"),
        ('{"ground_truth": "1"}', "line 2: 'response' is missing; it must be a string"),
        ('{"response": 3, "ground_truth": "1"}', "line 2: 'response' must be a string (got a number)"),
        ('{"response": "a"}', "line 2: 'ground_truth' is missing; it must be a string or a list of strings"),
        (
            '{"response": "a", "ground_truth": {"x": 1}}',
            "line 2: 'ground_truth' must be a string or a non-empty list of strings (got an object)",
        ),
        (
            '{"response": "a", "ground_truth": ["1", null]}',
            "line 2: 'ground_truth' must be a string or a non-empty list of strings (got a null inside the list)",
        ),
        ('{"response": "a", "ground_truth": []}', "(got an empty list)"),
    ],
)
def test_bad_line_is_one_line_error(tmp_path: Path, capsys, line: str, message: str):
    good = {"response": "a</think>" + FA + "\\boxed{1}", "ground_truth": "1"}
    code, target = _grade(tmp_path, [good, line])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("anytime-reasoner grade: error: ") and message in err
    assert err.count("\n") == 1
    assert not target.exists()


def test_missing_input_file(tmp_path: Path, capsys):
    code = main(["grade", f"input={tmp_path / 'nope.jsonl'}", f"output={tmp_path / 'o.jsonl'}"])
    assert code == 1
    assert f"input: file not found: {tmp_path / 'nope.jsonl'}" in capsys.readouterr().err


def test_parse_line_accepts_numbers_as_ground_truths():
    item = parse_line(7, '{"response": "r", "ground_truth": [25, "025", 2.5]}')
    assert (item.line, item.response, item.ground_truths) == (7, "r", ("25", "025", "2.5"))
    with pytest.raises(UserError, match="line 7: 'ground_truth' .* \\(got a boolean\\)"):
        parse_line(7, '{"response": "r", "ground_truth": true}')
