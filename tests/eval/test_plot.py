"""``anytime-reasoner plot``: eval and demo shapes overlaid, panels in order, a real PNG, clear errors."""

from __future__ import annotations

import json

import pytest

from anytime_reasoner.cli import main
from anytime_reasoner.errors import UserError
from anytime_reasoner.eval.plot import curves_of, panel_order

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def eval_file(path, model, acc):
    path.write_text(
        json.dumps(
            {
                "model": model,
                "budgets": [1000, 2000],
                "benchmarks": {"amc": {"accuracy": acc}, "aime": {"accuracy": [0.1, 0.2]}},
                "average": {"accuracy": [(acc[0] + 0.1) / 2, (acc[1] + 0.2) / 2]},
            }
        )
    )
    return path


def test_eval_and_demo_shapes(tmp_path):
    a = eval_file(tmp_path / "a.json", "runs/grpo", [0.5, 0.6])
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"budgets": [4, 8], "models": {"base": {"accuracy": [0.25, 0.5], "mean": 0.375}}}))
    curves = curves_of(str(a), None, True) + curves_of(str(demo), None, True)
    assert panel_order(curves) == ["average", "amc", "aime", "demo"]
    amc = next(c for c in curves if c.panel == "amc")
    assert (amc.label, amc.budgets, amc.percent) == ("grpo", (1000, 2000), (50.0, 60.0))
    base = next(c for c in curves if c.panel == "demo")
    assert (base.label, base.percent) == ("demo: base", (25.0, 50.0))


def test_plot_cli_writes_png(tmp_path, capsys):
    a = eval_file(tmp_path / "a.json", "grpo", [0.5, 0.6])
    b = eval_file(tmp_path / "b.json", "grpo", [0.55, 0.7])  # same model name: told apart as "grpo (2)"
    out = tmp_path / "fig" / "curves.png"
    assert main(["plot", str(a), str(b), f"out={out}", "title=test"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    assert "3 panels, 6 curves" in capsys.readouterr().out


def test_plot_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"budgets": [1, 2], "benchmarks": {"amc": {"accuracy": [0.1]}}}))
    with pytest.raises(UserError, match=r"bad.json: benchmarks.amc.accuracy must be a list of 2 numbers"):
        curves_of(str(bad), None, False)
    assert main(["plot", str(bad), "out=x.pdf"]) == 1
    assert "out: 'x.pdf' must end with .png" in capsys.readouterr().err
