"""Shared pieces of the benchmarks (run them as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import argparse
from typing import Any

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


def model_flops(model: torch.nn.Module, batch, pairs: int) -> float:
    """Forward+backward FLOPs of one training pass over ``batch`` attending ``pairs`` (query, key)
    pairs: linear layers 2·P_body per token, attention 4·d per pair per layer, the output head
    2·d·V per scored token; backward = 2× forward, plus one more forward of the (checkpointed) head."""
    cfg = model.config
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - head - embed
    tokens = int(batch.lengths.sum())
    scored = int(batch.trainable_mask.sum())
    attention = 4 * cfg.hidden_size * pairs * cfg.num_hidden_layers
    forward = 2 * body * tokens + attention + 2 * cfg.hidden_size * cfg.vocab_size * scored
    return 3 * forward + 2 * cfg.hidden_size * cfg.vocab_size * scored


def allowed_pairs(batch) -> int:
    """(query, key) pairs the tree rule allows between real tokens (causal pairs for plain rows)."""
    from anytime_reasoner.train.masks import allowed_attention

    allowed = allowed_attention(
        batch.segment_ids, batch.visible_trunk, batch.doc_ids, (batch.shared_start, batch.shared_end)
    )  # [N, T, T]
    real = batch.segment_ids != -1  # [N, T]
    return int((allowed & real[:, :, None]).sum())


def random_qwen2(
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    *,
    max_positions: int = 4096,
    attn: str = "sdpa",
    seed: int = 0,
    **config: Any,
) -> torch.nn.Module:
    """A float32 Qwen2 with random weights (``torch.manual_seed(seed)``), attention ``attn``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        **config,
    )
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).float()
