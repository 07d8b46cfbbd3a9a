"""``anytime-reasoner eval`` and ``ask`` with ``engine.backend=vllm`` (CI's vLLM environment; a clean
skip without vLLM), in this process: the shipped base model, widened to heads of 32 for vLLM's CPU
kernels, answers at every budget, and no thinking runs past its budget."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from anytime_reasoner.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]
ENGINE = ["engine.backend=vllm", "engine.enforce_eager=true", "engine.kv_cache_gib=0.25", "device=cpu"]


@pytest.fixture(scope="module")
def base_model():
    from anytime_reasoner.tasks.bootstrap import ensure_base_model

    return ensure_base_model(progress=False)


def test_eval_through_vllm_scores_every_budget(base_model, tmp_path, capsys):
    data = tmp_path / "two.json"
    data.write_text(json.dumps([{"problem": "What is 2+3?", "answer": "5"}, {"problem": "What is 7*6?", "answer": "42"}]))
    out = tmp_path / "eval"
    args = ["eval", f"model={base_model}", f"data={data}", "budgets=24,48", "max_prompt_tokens=256", "progress=false"]
    assert main([*args, *ENGINE, f"out={out}"]) == 0
    assert re.search(r"\d+ chunk\(s\) generated, 0 from cache", capsys.readouterr().out)
    result = json.loads((out / "results.json").read_text())
    assert result["budgets"] == [24, 48] and len(result["benchmarks"]["two"]["accuracy"]) == 2
    rows = [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:  # one thinking per sample, cut at each budget: what each answer saw is within it
        assert all(used <= budget for per_sample in row["used"] for used, budget in zip(per_sample, [24, 48], strict=True))
        assert all(1 <= n <= 48 for n in row["lengths"])


def test_ask_through_vllm_answers_at_every_budget(base_model, capsys):
    assert main(["ask", "What is 2+3?", f"model={base_model}", "budgets=24,48", *ENGINE]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("budget ")]
    assert [line.split(":")[0] for line in lines] == ["budget 24", "budget 48"]
    thinking = [int(re.search(r"\[(\d+) thinking tokens", line).group(1)) for line in lines]
    assert thinking[0] <= 24 and thinking[0] <= thinking[1] <= 48
