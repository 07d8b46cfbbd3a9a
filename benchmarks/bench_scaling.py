"""Step time as the work grows: thinking length 128 → 1024, and S·A summaries per thinking 1 → 16.

One anytime training step's three costly phases, each through the project's own code, on a random
4-layer, hidden-256 Qwen2 (vocab 4096) with B·G = ``--rows`` thinkings:

    thinking  ``TransformersEngine.sample``: every thinking to the budget (no stop ids)
    summary   ``summary_requests`` of those thinkings cut at S even budgets, A summaries of
              ``--summary`` tokens each (prefix reuse on, no stop ids)
    update    ``pack_rollouts`` + old log-probs + forward/backward (``accumulate_gradients``,
              tree attention, several trees per row)

Two series: thinking length L = 128, 256, 512, 1024 at S = A = 4; and S·A = 1, 2, 4, 8, 16
(S × A = 1×1, 2×1, 2×2, 4×2, 4×4) at L = 256. For every setting it prints each phase's median
seconds beside the token count that should drive it, both as ratios to the series' first row:
thinking tokens sampled; summary tokens sampled (and the prefix tokens prefilled); update tokens
(rows' real tokens) and attention pairs. Where time and tokens part, the docs explain with these numbers.

    python benchmarks/bench_scaling.py              # ~5 min on one thread
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import random_qwen2

VOCAB, PAD, THINK_END = 4096, 0, 2


def one_step(model, rows: int, length: int, S: int, A: int, summary: int, seed: int) -> dict[str, float]:
    """Seconds of each phase and the token counts, for one setting."""
    from anytime_reasoner.engine.base import SamplingParams
    from anytime_reasoner.engine.hf import TransformersEngine
    from anytime_reasoner.protocol import InsertedIds
    from anytime_reasoner.rollout.anytime import summary_requests
    from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
    from anytime_reasoner.train.masks import allowed_attention
    from anytime_reasoner.train.packing import pack_rollouts
    from anytime_reasoner.train.update import accumulate_gradients, compute_old_logprobs

    gen = torch.Generator().manual_seed(seed)
    engine = TransformersEngine(model, PAD, max_batch_rows=256)
    prompt = torch.randint(3, VOCAB, (40,), generator=gen).tolist()
    budgets = tuple(round(length * (j + 1) / S) for j in range(S))
    out: dict[str, float] = {}

    model.eval()
    start = time.perf_counter()
    thinking = engine.sample([prompt], rows, SamplingParams(max_new_tokens=length, temperature=1.0, stop_token_ids=(), seed=seed))
    out["thinking"] = time.perf_counter() - start
    thinkings = [[Thinking(prompt_ids=prompt, thinking_ids=list(c.token_ids), closed=False, cuts=[]) for c in thinking[0]]]
    inserted = InsertedIds(closed=(5, 6, 7), forced=(8, 9, THINK_END, 5, 6, 7))
    requests = summary_requests(thinkings, budgets, inserted)
    prefilled = engine.stats.prefill_tokens
    start = time.perf_counter()
    completions = engine.sample(
        [r.prefix for r in requests],
        [A * len(r.group.budget_indices) for r in requests],
        SamplingParams(max_new_tokens=summary, temperature=1.0, stop_token_ids=(), seed=seed),
    )
    out["summary"] = time.perf_counter() - start
    out["prefix_tokens"] = engine.stats.prefill_tokens - prefilled
    for t in thinkings[0]:
        t.cuts = [min(b, t.length) for b in budgets]
        t.summaries = [[] for _ in budgets]
    for request, samples in zip(requests, completions, strict=True):
        t = thinkings[request.b][request.g]
        for k, j in enumerate(request.group.budget_indices):  # budgets sharing this prefix, A samples each
            t.summaries[j] += [Summary(list(inserted.forced), list(c.token_ids), "", 0.0) for c in samples[k * A : (k + 1) * A]]
    batch = RolloutBatch(budgets=budgets, thinkings=thinkings)

    model.train()
    start = time.perf_counter()
    packed = pack_rollouts(batch, torch.randn(1, rows, S, generator=gen), torch.randn(1, rows, S, A, generator=gen))
    old = compute_old_logprobs(model, packed, max_token_len=16384, multi_tree=True)
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, packed, old, normalizer=1000.0, clip_eps=0.2, max_token_len=16384, multi_tree=True)
    out["update"] = time.perf_counter() - start
    out["thinking_tokens"] = rows * length
    out["summary_tokens"] = rows * S * A * summary
    out["update_tokens"] = int(packed.lengths.sum())
    allowed = allowed_attention(
        packed.segment_ids, packed.visible_trunk, packed.doc_ids, (packed.shared_start, packed.shared_end)
    )  # [N, T, T]
    out["pairs"] = int((allowed & (packed.segment_ids != -1)[:, :, None]).sum())
    return out


def series(model, name: str, settings: list[tuple[int, int, int]], args: argparse.Namespace) -> None:
    results = []
    for length, S, A in settings:
        runs = [one_step(model, args.rows, length, S, A, args.summary, seed) for seed in range(args.repeats)]
        results.append({k: statistics.median(r[k] for r in runs) for k in runs[0]})
        print(f"  done: {name} L={length} S={S} A={A}", flush=True)
    first = results[0]

    def cell(r: dict[str, float], time_key: str, token_key: str) -> str:
        return f"{r[time_key]:.2f} s ({r[time_key] / first[time_key]:.2f}×) | {r[token_key] / first[token_key]:.2f}×"

    print(f"\n{name}\n")
    print(
        "| L | S×A | thinking s (× first) | thinking tokens × | summary s (×) | summary tokens × | prefix tokens × "
        "| update s (×) | update tokens × | attention pairs × |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (length, S, A), r in zip(settings, results, strict=True):
        print(
            f"| {length} | {S}×{A} | {cell(r, 'thinking', 'thinking_tokens')} | {cell(r, 'summary', 'summary_tokens')} | "
            f"{r['prefix_tokens'] / first['prefix_tokens']:.2f}× | {cell(r, 'update', 'update_tokens')} | "
            f"{r['pairs'] / first['pairs']:.2f}× |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8, help="thinkings (B·G)")
    parser.add_argument("--summary", type=int, default=16, help="summary tokens (the cap; no stop ids)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from anytime_reasoner.train.tree_attention import register

    model = random_qwen2(VOCAB, 256, 4, 8, 4, 768, attn=register(), pad_token_id=PAD, eos_token_id=1)
    one_step(model, 2, 32, 2, 2, 4, seed=99)  # warm-up
    print(f"Qwen2 hidden 256, 4 layers, vocab {VOCAB}; {args.rows} thinkings; summaries of {args.summary} tokens")
    series(model, "thinking length (S = A = 4)", [(128, 4, 4), (256, 4, 4), (512, 4, 4), (1024, 4, 4)], args)
    series(model, "summaries per thinking (L = 256)", [(256, 1, 1), (256, 2, 1), (256, 2, 2), (256, 4, 2), (256, 4, 4)], args)


if __name__ == "__main__":
    main()
