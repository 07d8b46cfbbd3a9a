"""Data: one schema from JSON / JSONL / parquet / hub, validation counts, named sets, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from anytime_reasoner.cli import main
from anytime_reasoner.data.build import load_source, read_examples, write_jsonl
from anytime_reasoner.data.prompts import render_prompt
from anytime_reasoner.data.schema import INSTRUCTION, Example
from anytime_reasoner.data.sources import DATA_ENV, resolve_data_dir
from anytime_reasoner.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

# 10 rows: 3 good, then one of each problem (hand-counted below).
ROWS = [
    {"problem": "What is 1+1?", "answer": "2"},  # kept
    {"problem": "AMC style", "answer": 142.0},  # kept, ground truth "142"
    {"problem": "Several", "answer": ["$\\frac12$", " 0.5 ", ""]},  # kept, 2 truths (empty one dropped)
    {"problem": "No answer", "answer": None},  # missing
    {"problem": "Blank answer", "answer": "  "},  # missing
    {"problem": "Empty list", "answer": []},  # missing
    {"answer": "3"},  # missing (no problem)
    {"problem": "Bool", "answer": True},  # wrong type
    {"problem": 17, "answer": "3"},  # wrong type
    {"problem": "What is  1+1? ", "answer": "2"},  # duplicate of row 0 (whitespace differs)
]


@pytest.fixture
def raw_json(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(ROWS))
    return path


def test_validation_counts_and_schema(raw_json):
    examples, report = load_source(str(raw_json))
    assert [e.id for e in examples] == ["toy-0", "toy-1", "toy-2"]
    assert [e.ground_truths for e in examples] == [("2",), ("142",), ("$\\frac12$", "0.5")]
    assert (report.read, report.kept) == (10, 3)
    assert report.skipped == {"missing": 4, "wrong_type": 2, "duplicate": 1, "too_long": 0}
    assert report.summary().startswith("toy: 10 read, 3 kept (skipped: 4 missing, 2 wrong type, 1 duplicate, 0 too long)")
    row = examples[0].to_row()
    assert row == {
        "id": "toy-0",
        "data_source": "toy",
        "prompt": [{"role": "user", "content": "What is 1+1?" + INSTRUCTION}],
        "ground_truths": ["2"],
    }
    assert INSTRUCTION == " Let's think step by step and output the final answer within \\boxed{}."


def test_strict_names_row_and_field(raw_json):
    with pytest.raises(UserError, match=r"^toy row 3: field 'answer' is missing or empty$"):
        load_source(str(raw_json), strict=True)


def test_strict_names_wrong_type(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n\n{"problem": "q", "answer": {"x": 1}}\n')
    with pytest.raises(UserError, match=r"^t line 3: field 'answer' has type dict; allowed: string, number"):
        load_source(str(path), strict=True)


def test_too_long_prompts_dropped_with_a_tokenizer(raw_json, tiny_tokenizer):
    # Byte-level tokenizer: "<|user|>" (1) + content bytes + "\n" (1) + "<|assistant|>" (1) + "<think>" (1) + "\n" (1).
    # Row 0: "What is 1+1?" (12) + INSTRUCTION (70) = 82 content bytes → 87 tokens; "AMC style" → 84; "Several" → 82.
    assert len(INSTRUCTION) == 70
    examples, report = load_source(str(raw_json), tokenizer=tiny_tokenizer, max_prompt_tokens=83)
    assert [e.id for e in examples] == ["toy-2"]
    assert report.skipped["too_long"] == 2


def test_jsonl_round_trip_keeps_ids_and_sources(raw_json, tmp_path):
    examples, _ = load_source(str(raw_json))
    out = tmp_path / "out" / "toy.jsonl"
    write_jsonl(examples, out)
    assert read_examples(out) == examples


def test_parquet_and_hub_need_their_optional_packages(tmp_path, monkeypatch):
    parquet = tmp_path / "x.parquet"
    parquet.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="needs the optional pyarrow package"):
        load_source(str(parquet))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="^agentica-org/DeepScaleR-Preview-Dataset: .*optional datasets package"):
        load_source("agentica-org/DeepScaleR-Preview-Dataset")


def test_data_dir_from_option_or_env(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(UserError, match=f"pass data_dir=DIR or set {DATA_ENV}=DIR"):
        resolve_data_dir(None)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(UserError, match="aime: .*test/aime.json not found"):
        load_source("aime")
    with pytest.raises(UserError, match="^nope: unknown data source; allowed: aime, amc, math500"):
        load_source("nope")


def test_prompt_gets_think_opener(tiny_tokenizer):
    msgs = Example.from_problem("i", "s", "Q", ("1",)).messages
    assert render_prompt(tiny_tokenizer, msgs) == "<|user|>Q" + INSTRUCTION + "\n<|assistant|><think>\n"


def test_cli_writes_per_source_and_merged(raw_json, tmp_path, capsys):
    assert main(["data", str(raw_json), f"out={tmp_path / 'sets'}"]) == 0
    assert len((tmp_path / "sets" / "toy.jsonl").read_text().splitlines()) == 3
    assert "toy: 10 read, 3 kept" in capsys.readouterr().out
    # merged: the same file twice → the second copy is all duplicates
    assert main(["data", str(raw_json), str(raw_json), f"out={tmp_path / 'all.jsonl'}"]) == 0
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 3
    assert main(["data", str(raw_json), "strict=true", f"out={tmp_path / 's'}"]) == 1
    assert "toy row 3: field 'answer' is missing or empty" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_named_benchmarks_and_train_sets():
    counts = {"aime": 30, "amc": 83, "math500": 500, "minerva": 272, "olympiad_bench": 675, "train/aime": 975}
    for name, n in counts.items():
        examples, report = load_source(name, data_dir=str(SHARED))
        assert (report.read, report.kept) == (n, n), name
        assert all(e.data_source == name for e in examples)
    amc, _ = load_source("amc", data_dir=str(SHARED))
    assert all("." not in e.ground_truths[0] for e in amc)  # 142.0 → "142"
    # train/math: 7474 rows, 2 null and 2 empty answers, one problem repeated
    _, report = load_source("train/math", data_dir=str(SHARED))
    assert (report.read, report.kept, report.skipped["missing"], report.skipped["duplicate"]) == (7474, 7469, 4, 1)
