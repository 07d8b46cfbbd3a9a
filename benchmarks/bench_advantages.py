"""BRPO advantages at the paper's scale: the vectorized ``algo.advantages`` vs a plain Python loop.

B = 64 questions, G = 8 thinkings, S = 8 budgets, A = 4 summaries (random 0/1 rewards, the
linear prior, cuts with budgets past a thinking's end sharing a prefix). Times, side by side in one
run (medians over ``--repeats``):

- ``thinking_advantages`` (brpo) + ``summary_advantages`` (brpo, shared prefixes) vectorized;
- the same formulas as nested loops over b, g, s, a (``loop_*`` below, the docstring of
  ``algo/advantages.py`` written out), checked equal to 1e-6 first;
- ``brpo_diagnostics`` (four baselines' variances per budget), which the trainer logs every step.

    python benchmarks/bench_advantages.py          # ~5 s on one CPU thread
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from anytime_reasoner.algo.advantages import brpo_diagnostics, summary_advantages, thinking_advantages


def loop_thinking_advantages(scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """brpo: ``R[s] − (s·V1[s] + (S−s)·V2[s]) / S`` with plain loops (float64)."""
    B, G, S, A = scores.shape
    p = [float(x) for x in probs / probs.sum()]
    r = [[[sum(float(scores[b, g, s, a]) for a in range(A)) / A for s in range(S)] for g in range(G)] for b in range(B)]
    R = [[[sum(p[j] * r[b][g][j] for j in range(s, S)) for s in range(S)] for g in range(G)] for b in range(B)]
    out = torch.zeros(B, G, S)
    for b in range(B):
        for s in range(S):
            v2 = sum(R[b][g][s] for g in range(G)) / G
            for g in range(G):
                if s == 0:
                    v1 = 0.0
                else:
                    mean_before = sum(2.0**k * r[b][g][k] for k in range(s)) / sum(2.0**k for k in range(s))
                    v1 = mean_before * sum(p[j] for j in range(s, S))
                out[b, g, s] = R[b][g][s] - (s * v1 + (S - s) * v2) / S
    return out


def loop_summary_advantages(scores: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """Score minus the mean of every summary sampled from the same prefix (equal cuts pool)."""
    B, G, S, A = scores.shape
    out = torch.zeros(B, G, S, A)
    for b in range(B):
        for g in range(G):
            for s in range(S):
                same = [j for j in range(S) if int(cuts[b, g, j]) == int(cuts[b, g, s])]
                mean = sum(float(scores[b, g, j, a]) for j in same for a in range(A)) / (len(same) * A)
                for a in range(A):
                    out[b, g, s, a] = float(scores[b, g, s, a]) - mean
    return out


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="64,8,8,4", help="B,G,S,A")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    B, G, S, A = (int(x) for x in args.shape.split(","))
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 2, (B, G, S, A), generator=gen).float()  # [B, G, S, A]
    probs = torch.arange(1, S + 1, dtype=torch.float64)  # linear prior
    budgets = torch.arange(1, S + 1) * 1000  # [S]
    lengths = torch.randint(500, S * 1000 + 1, (B, G), generator=gen)  # [B, G]
    cuts = torch.minimum(budgets, lengths[..., None])  # [B, G, S]: budgets past the end share a cut

    think = thinking_advantages(scores, probs, "brpo")
    summ = summary_advantages(scores, "brpo", cuts)
    torch.testing.assert_close(think, loop_thinking_advantages(scores, probs), atol=1e-6, rtol=0)
    torch.testing.assert_close(summ, loop_summary_advantages(scores, cuts), atol=1e-6, rtol=0)

    vectorized = median_seconds(
        lambda: (thinking_advantages(scores, probs), summary_advantages(scores, "brpo", cuts)), args.repeats
    )
    loop = median_seconds(
        lambda: (loop_thinking_advantages(scores, probs), loop_summary_advantages(scores, cuts)), max(1, args.repeats // 5)
    )
    diagnostics = median_seconds(lambda: brpo_diagnostics(scores, probs, cuts > 0), args.repeats)
    print(f"shape B,G,S,A: {B},{G},{S},{A}; threads: 1; equal to the loop within 1e-6")
    print(f"vectorized advantages: {vectorized * 1e3:.2f} ms")
    print(f"plain loop:            {loop * 1e3:.0f} ms  ({loop / vectorized:.0f}x slower)")
    print(f"brpo_diagnostics:      {diagnostics * 1e3:.2f} ms")
    print(f"algo/ per step (advantages + diagnostics): {(vectorized + diagnostics) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
