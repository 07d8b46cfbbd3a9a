"""The vectorized BRPO advantages equal the plain-loop reference of benchmarks/bench_advantages.py
(the docstring formulas of algo/advantages.py written out) on random rollouts."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from anytime_reasoner.algo.advantages import summary_advantages, thinking_advantages

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_advantages.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_advantages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_advantages"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_equals_the_loop(bench, seed):
    gen = torch.Generator().manual_seed(seed)
    B, G, S, A = 3, 4, 5, 3
    scores = torch.randint(0, 2, (B, G, S, A), generator=gen).float()
    probs = torch.rand(S, generator=gen, dtype=torch.float64) + 0.1
    cuts = torch.minimum(torch.arange(1, S + 1) * 10, torch.randint(5, 60, (B, G), generator=gen)[..., None])
    torch.testing.assert_close(
        thinking_advantages(scores, probs, "brpo"), bench.loop_thinking_advantages(scores, probs), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        summary_advantages(scores, "brpo", cuts), bench.loop_summary_advantages(scores, cuts), atol=1e-6, rtol=0
    )
