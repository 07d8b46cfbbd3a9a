"""Update efficiency: model FLOP/s of a training forward+backward ÷ the matmul peak of this process.

One tree-packed batch of random anytime rollouts (``--G`` thinkings of ~``--thinking`` tokens,
S = A = 4 summaries of ~16 tokens) through a random ~34M-parameter Qwen2 (hidden 512, 8 layers,
vocab 8192), the trainer's own scorer (``train.logprobs.PolicyScorer``: decoder body, chunked and
checkpointed output head), then ``backward``. Attention variants, same weights:

    dense  sdpa with the dense [N, 1, T, T] tree mask (built inside the timed pass)
    tree   tree attention (train.tree_attention): sdpa over trunks, and over blocks + prefixes
    none   attention skipped (each query's output = its own value): what the rest of the model costs

FLOPs are counted from the shapes (multiply-add = 2): linear layers 2·P_body per token, attention
4·d·(pairs attended) per layer — every ``T²`` pair for dense, the pairs the tree rule allows for
tree — and the output head 2·d·V per scored token; backward = 2× forward, plus one more forward of
the head (its chunks are recomputed in the backward). The peak is the best of ``torch.mm`` on the
model's own matmul shapes and on 2048², timed in the same process, per dtype. Attention share =
1 − time(none) / time(variant). Prints medians of ``--repeats`` passes after a warm-up.

    python benchmarks/bench_mfu.py                    # fp32 and bf16 autocast, 2 threads, ~4 min
    python benchmarks/bench_mfu.py --dtypes float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import allowed_pairs, model_flops, random_qwen2, random_rollouts

NO_ATTENTION = "bench_no_attention"


def no_attention(module, query, key, value, attention_mask, **kwargs):
    """Skip attention: each query's output is its own (GQA-repeated) value vector → ``[N, T, H, D]``."""
    return value.repeat_interleave(query.shape[1] // value.shape[1], dim=1).transpose(1, 2), None


def build_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    from transformers import AttentionInterface

    from anytime_reasoner.train.tree_attention import register

    AttentionInterface.register(NO_ATTENTION, no_attention)
    models = {}
    for name, impl in (("dense", "sdpa"), ("tree", register()), ("none", NO_ATTENTION)):
        models[name] = random_qwen2(
            args.vocab,
            args.hidden,
            args.layers,
            args.hidden // 64,
            args.hidden // 128,
            3 * args.hidden,
            max_positions=8192,
            attn=impl,
            tie_word_embeddings=False,
        ).train()
    return models


def one_pass(name: str, model, batch, dtype: torch.dtype) -> float:
    from anytime_reasoner.train.logprobs import PolicyScorer
    from anytime_reasoner.train.masks import dense_attention_mask
    from anytime_reasoner.train.tree_attention import TreeLayout, placeholder_mask

    rows, cols = batch.trainable_mask.nonzero(as_tuple=True)
    prev = batch.prev_index[rows, cols]
    targets = batch.input_ids[rows, cols]
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        if name == "dense":
            mask, layout = dense_attention_mask(batch, dtype=torch.float32), None
        elif name == "tree":
            mask, layout = placeholder_mask(batch), TreeLayout.of(batch)
        else:
            mask, layout = None, None
        logprobs = PolicyScorer(model)(batch.input_ids, batch.position_ids, mask, rows, prev, targets, 1024, 1.0, layout)
    logprobs.sum().backward()
    return time.perf_counter() - start


def matmul_peak(model: torch.nn.Module, tokens: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of ``torch.mm`` over the model's linear shapes (``tokens`` rows) and 2048²."""
    d, inter, vocab = model.config.hidden_size, model.config.intermediate_size, model.config.vocab_size
    shapes = [(tokens, d, d), (tokens, d, inter), (tokens, inter, d), (1024, d, vocab), (2048, 2048, 2048)]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * m * k * n / statistics.median(times))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in [
        ("B", 1),
        ("G", 2),
        ("S", 4),
        ("A", 4),
        ("thinking", 256),
        ("summary", 16),
        ("prompt", 40),
        ("vocab", 8192),
        ("hidden", 512),
        ("layers", 8),
        ("repeats", 2),
        ("seed", 0),
        ("threads", 2),
    ]:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from anytime_reasoner.train.packing import pack_rollouts

    gen = torch.Generator().manual_seed(args.seed)
    rollouts = random_rollouts(args, gen)
    B, G, S, A = rollouts.shape
    batch = pack_rollouts(rollouts, torch.randn(B, G, S, generator=gen), torch.randn(B, G, S, A, generator=gen))
    models = build_models(args)
    n_params = sum(p.numel() for p in models["tree"].parameters())
    pairs = {"dense": batch.n_rows * batch.width**2, "tree": allowed_pairs(batch), "none": 0}
    tokens = int(batch.lengths.sum())
    print(
        f"Qwen2 {n_params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}); "
        f"{batch.n_rows} rows, {tokens} tokens ({int(batch.trainable_mask.sum())} scored), width {batch.width}; "
        f"attention pairs dense {pairs['dense']:,} vs allowed {pairs['tree']:,}; torch threads {torch.get_num_threads()}"
    )
    print("| dtype | attention | pass (median) | model GFLOP | achieved GFLOP/s | matmul peak GFLOP/s | MFU | attention share |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        peak = matmul_peak(models["tree"], tokens, dtype)
        times: dict[str, list[float]] = {name: [] for name in models}
        for repeat in range(args.repeats + 1):  # interleaved; repeat 0 warms up
            for name, model in models.items():
                seconds = one_pass(name, model, batch, dtype)
                if repeat:
                    times[name].append(seconds)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, model in models.items():
            flops = model_flops(model, batch, pairs[name])
            achieved = flops / medians[name]
            share = 1 - medians["none"] / medians[name]
            print(
                f"| {dtype_name} | {name} | {medians[name]:.2f} s | {flops / 1e9:.0f} | {achieved / 1e9:.1f} | "
                f"{peak / 1e9:.1f} | {achieved / peak:.0%} | {share:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
