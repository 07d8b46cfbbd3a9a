"""Packed vs unpacked PPO forward+backward on the same anytime rollouts (docs/ALGORITHM.md §7).

Packed: one row per thinking holding all S·A summary blocks, attention through the dense tree mask.
Tree: the same rows under tree attention (``train.tree_attention``), several trees per row.
Unpacked: per thinking, ``prompt + thinking`` plus one plain row per summary
``prompt + thinking[:cut] + inserted + summary`` — the thinking prefix is recomputed S·A times.

Both go through the same :func:`accumulate_gradients` (micro-batches of ≤ ``--max-token-len``
padded tokens, one backward each), on the same random rollouts and the same random Qwen2.
Prints wall-clock medians (and minima, and the median process CPU time) over ``--repeats`` timed runs (after one warm-up; packed and unpacked interleaved), their ratio, and token counts.

    python benchmarks/bench_packed_update.py            # S = A = G = 4, thinking ~300, summaries ~16

``--threads`` defaults to 1 (0 = torch's default): on a shared CPU, multi-threaded kernels spin
on each other's load and the medians stop meaning anything. Runs in about 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import allowed_pairs, model_flops, random_qwen2, random_rollouts

from anytime_reasoner.train.logprobs import packed_logprobs
from anytime_reasoner.train.packing import PackedBatch, pack_rollouts, unpack_rollouts
from anytime_reasoner.train.tree_attention import register
from anytime_reasoner.train.update import (
    accumulate_gradients,
    compute_old_logprobs,
    minibatch_normalizer,
    multi_tree_micro_batches,
    token_budget_micro_batches,
)


def tiny_qwen2(args: argparse.Namespace, attn: str = "sdpa"):
    return random_qwen2(args.vocab, args.hidden, args.layers, 4, 2, 2 * args.hidden, attn=attn).train()


def update_pass(
    model, rows: PackedBatch, old_logprobs: torch.Tensor, normalizer: float, max_token_len: int, multi_tree: bool
) -> tuple[float, float]:
    """(wall, process CPU) seconds for one forward+backward pass over all rows."""
    model.zero_grad(set_to_none=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    accumulate_gradients(
        model, rows, old_logprobs, normalizer=normalizer, clip_eps=0.2, max_token_len=max_token_len, multi_tree=multi_tree
    )
    return time.perf_counter() - start, time.process_time() - start_cpu


def padded_tokens(rows: PackedBatch, max_token_len: int, wide: bool) -> int:
    """Tokens the model runs over: Σ over micro-batches of rows × longest row (one tree per row),
    or of the merged rows' widths (several trees per row, rows as wide as the budget)."""
    lengths = rows.lengths.tolist()
    if wide:
        micro = multi_tree_micro_batches(rows.lengths, max_token_len, wide=True)
        return sum(len(bins) * max(sum(lengths[i] for i in b) for b in bins) for bins in micro)
    return sum(len(m) * max(lengths[i] for i in m) for m in token_budget_micro_batches(rows.lengths, max_token_len))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [
        ("B", 1),
        ("G", 4),
        ("S", 4),
        ("A", 4),
        ("thinking", 300),
        ("summary", 16),
        ("prompt", 40),
        ("vocab", 1024),
        ("hidden", 128),
        ("layers", 2),
        ("max_token_len", 4096),
        ("repeats", 3),
        ("seed", 0),
        ("threads", 1),
    ]:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    rollouts = random_rollouts(args, gen)
    B, G, S, A = rollouts.shape
    think_adv, summ_adv = torch.randn(B, G, S, generator=gen), torch.randn(B, G, S, A, generator=gen)
    model = tiny_qwen2(args)
    tree_model = tiny_qwen2(args, register())  # the same weights under tree attention
    packed = pack_rollouts(rollouts, think_adv, summ_adv)
    unpacked = unpack_rollouts(rollouts, think_adv, summ_adv)

    with torch.no_grad():  # same numbers either way
        diff = (
            (packed_logprobs(model, packed)[packed.trainable_mask] - packed_logprobs(model, unpacked)[unpacked.trainable_mask])
            .abs()
            .max()
        )

    print(
        f"rollouts: B={B} G={G} S={S} A={A}, thinking ~{args.thinking}, summary ~{args.summary}; "
        f"Qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab}; torch threads={torch.get_num_threads()}"
    )
    print(f"max |packed - unpacked| log-prob on trainable tokens: {float(diff):.2e}")
    print(f"{'layout':<9} {'rows':>5} {'tokens':>7} {'padded':>7} {'trainable':>9} {'median s':>9} {'min s':>7} {'cpu s':>7}")
    # layout: (rows, model, several trees per row)
    layouts = {"packed": (packed, model, False), "unpacked": (unpacked, model, False), "tree": (packed, tree_model, True)}
    inputs = {
        name: (
            compute_old_logprobs(m, rows, max_token_len=args.max_token_len, multi_tree=multi),
            minibatch_normalizer(rows, "constant", 1024),
        )
        for name, (rows, m, multi) in layouts.items()
    }  # old log-probs [N, T] and normalizer of each layout
    times: dict[str, list[float]] = {name: [] for name in layouts}
    cpu_times: dict[str, list[float]] = {name: [] for name in layouts}
    for repeat in range(args.repeats + 1):  # interleaved, so load from other processes hits both alike
        for name, (rows, m, multi) in layouts.items():
            seconds, cpu_seconds = update_pass(m, rows, *inputs[name], args.max_token_len, multi)
            if repeat:  # repeat 0 warms up
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, (rows, _, multi) in layouts.items():
        print(
            f"{name:<9} {rows.n_rows:>5} {int(rows.lengths.sum()):>7} {padded_tokens(rows, args.max_token_len, multi):>7} "
            f"{int(rows.trainable_mask.sum()):>9} {medians[name]:>9.3f} {min(times[name]):>7.3f} {statistics.median(cpu_times[name]):>7.3f}"
        )
    bound = int(unpacked.lengths.sum()) / int(packed.lengths.sum())
    flops = {name: model_flops(model, rows, allowed_pairs(rows)) for name, (rows, _, _) in layouts.items()}
    flop_bound = flops["unpacked"] / flops["packed"]
    print(
        f"model GFLOP per pass (linear layers, allowed attention pairs, output head on the {int(packed.trainable_mask.sum())} "
        f"scored tokens): packed {flops['packed'] / 1e9:.2f}, unpacked {flops['unpacked'] / 1e9:.2f} → FLOP bound {flop_bound:.2f}x"
    )
    for name in ("packed", "tree"):
        speedup = medians["unpacked"] / medians[name]
        print(
            f"unpacked / {name} time: {speedup:.2f}x: {speedup / bound:.2f} of the token-count bound ({bound:.2f}x), "
            f"{speedup / flop_bound:.2f} of the FLOP bound ({flop_bound:.2f}x)"
        )


if __name__ == "__main__":
    main()
