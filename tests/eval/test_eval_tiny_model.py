"""``anytime-reasoner eval`` end to end: a tiny random Qwen2 on real AIME problems from ../shared/data.

The model is random, so accuracy is 0; what is checked is the pipeline (files, shapes, settings),
that a resumed run reproduces the uninterrupted one row for row (seeded per chunk), and the
one-line errors (a tokenizer without ``</think>`` as one token).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from anytime_reasoner.cli import main

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present"),
]  # slow: trains or generates with a tiny model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def args(model_dir, out):
    return [
        "eval",
        f"model={model_dir}",
        "data=aime",
        f"data_dir={SHARED}",
        "budgets=4,8",
        "samples=2",
        "limit=2",
        "batch_size=1",
        "summary_max_tokens=4",
        f"out={out}",
        "progress=false",
        "device=cpu",
    ]


def test_eval_end_to_end_and_resume(model_dir, tmp_path, capsys):
    full = tmp_path / "full"
    assert main(args(model_dir, full)) == 0
    printed = capsys.readouterr().out
    assert "| aime | 2 |" in printed and "2 chunk(s) generated, 0 from cache" in printed
    result = json.loads((full / "results.json").read_text())
    assert result["budgets"] == [4, 8]
    aime = result["benchmarks"]["aime"]
    assert (aime["n_problems"], aime["n_samples"], len(aime["accuracy"])) == (2, 2, 2)
    assert all(0.0 <= a <= 1.0 for a in aime["accuracy"]) and result["average"]["final"] == aime["final"]
    assert 1 <= aime["thinking_tokens"]["max"] <= 8
    for name in ("results.csv", "results.md"):
        assert (full / name).is_file()
    rows = (full / "cache.jsonl").read_text().splitlines()
    assert len(rows) == 2

    # An interruption after the first problem: the cache holds only its row; rerun finishes it.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "cache.jsonl").write_text(rows[0] + "\n")
    assert main(args(model_dir, resumed)) == 0
    assert "1 chunk(s) generated, 1 from cache" in capsys.readouterr().out
    assert (resumed / "cache.jsonl").read_text().splitlines() == rows  # same sampled lengths and rewards
    assert json.loads((resumed / "results.json").read_text()) == result

    # Nothing left to do: a third run only reads the cache.
    assert main(args(model_dir, resumed)) == 0
    assert "0 chunk(s) generated, 2 from cache" in capsys.readouterr().out


def test_eval_needs_think_end_as_one_token(tmp_path, tiny_model, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<unk>": 0, "<": 1, "/": 2, "think": 3, ">": 4}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Punctuation()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<unk>")
    tok.save_pretrained(tmp_path)
    tiny_model.save_pretrained(tmp_path)
    assert main(["eval", f"model={tmp_path}", "data=aime", f"data_dir={SHARED}", f"out={tmp_path / 'o'}"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: think_start: '<think>' is \d+ tokens .* it must be exactly one", err)
