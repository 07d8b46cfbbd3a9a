"""``eval.curve.anytime_curve``: the embedded task's anytime check IS the evaluation (eval.runner).

A tiny random Qwen2 scores about 0; what is checked is that the curve comes from the project's
evaluation path — the same rows as the demo's held-out file, and, on those rows, the same rewards
and thinking lengths, problem for problem, as the ``anytime-reasoner eval`` command.
"""

from __future__ import annotations

import json

import pytest

from anytime_reasoner.cli import main
from anytime_reasoner.eval.curve import BENCHMARK, anytime_curve, problem_rows
from anytime_reasoner.tasks import synthetic
from anytime_reasoner.tasks.synthetic import synthetic_held_out

pytestmark = pytest.mark.slow  # trains or generates with a tiny model

BUDGETS = [4, 8]


@pytest.fixture(scope="module")
def problems():
    return synthetic.held_out(3, seed=0)


def test_rows_are_the_demo_held_out_rows(problems):
    assert problem_rows(problems) == synthetic_held_out(3, seed=0)
    assert problem_rows(problems)[0].messages == [{"role": "user", "content": problems[0].prompt}]


def test_curve_shapes_and_determinism(tiny_model, tiny_tokenizer, problems, single_thread):
    kwargs = dict(summary_max_tokens=4, batch_size=2)
    results = anytime_curve(tiny_model, tiny_tokenizer, problems, BUDGETS, samples=2, seed=0, **kwargs)
    scores = results.benchmarks[BENCHMARK]
    assert results.settings.budgets == (4, 8) and (scores.n_problems, scores.n_samples) == (3, 2)
    assert len(results.average.accuracy) == 2 and all(0.0 <= a <= 1.0 for a in results.average.accuracy)
    assert results.chunks_run == 2 and 1 <= scores.thinking.max <= max(BUDGETS)
    again = anytime_curve(tiny_model, tiny_tokenizer, problems, "4:8:4", samples=2, seed=0, **kwargs)
    assert again.problems == results.problems  # a grid string, same draws


def test_curve_equals_the_eval_command(tiny_model, tiny_tokenizer, problems, tmp_path, capsys, single_thread):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    held_out = tmp_path / f"{BENCHMARK}.jsonl"
    held_out.write_text("".join(json.dumps(e.to_row()) + "\n" for e in problem_rows(problems)))
    out = tmp_path / "eval"
    assert main([
        "eval", f"model={model_dir}", f"data={held_out}", "budgets=8,96", "samples=2", "temperature=0.6",
        "summary_max_tokens=4", "batch_size=2", "seed=0", "device=cpu", f"out={out}", "progress=false",
    ]) == 0  # fmt: skip
    capsys.readouterr()
    cached = [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines()]
    results = anytime_curve(tiny_model, tiny_tokenizer, problems, [8, 96], 2, 0, summary_max_tokens=4, batch_size=2)
    mine = [r.to_json() for r in results.problems[BENCHMARK]]
    assert len({n for r in mine for n in r["lengths"]}) > 1  # some thinkings closed early: the draws are compared
    assert [{k: row[k] for k in mine[0]} for row in cached] == mine
    written = json.loads((out / "results.json").read_text())["benchmarks"][BENCHMARK]
    assert written["accuracy"] == list(results.average.accuracy)
