"""Shared pieces of the benchmarks (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse

import torch

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking

MARKER, THINK_END, DELIMITER = [5, 6, 5, 6], 7, [8, 9, 10]


def random_rollouts(args: argparse.Namespace, gen: torch.Generator) -> RolloutBatch:
    """B questions × G thinkings of ~``thinking`` tokens, cut at S even budgets, A summaries each."""
    budgets = tuple(round(j * args.thinking / args.S) for j in range(1, args.S + 1))

    def ids(n: int) -> list[int]:
        return torch.randint(16, args.vocab, (n,), generator=gen).tolist()

    def thinking() -> Thinking:
        length = int(torch.randint(int(0.8 * args.thinking), args.thinking + 1, (1,), generator=gen))
        closed = length < budgets[-1]
        cuts = [min(b, length) for b in budgets]
        summaries = []
        for b in budgets:
            inserted = MARKER + [THINK_END] + DELIMITER if (length > b or not closed) else list(DELIMITER)
            n = lambda: int(torch.randint(args.summary // 2, args.summary * 3 // 2 + 1, (1,), generator=gen))  # noqa: E731
            summaries.append([Summary(inserted, ids(n()), "", 0.0) for _ in range(args.A)])
        return Thinking(prompt_ids=ids(args.prompt), thinking_ids=ids(length), closed=closed, cuts=cuts, summaries=summaries)

    return RolloutBatch(budgets=budgets, thinkings=[[thinking() for _ in range(args.G)] for _ in range(args.B)])
