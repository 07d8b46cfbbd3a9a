"""Hand-built rollouts with random token ids and tiny random models for the training tests.

Inserted text follows docs/ALGORITHM.md §3: a thinking cut inside (or not closed) gets
``cut marker + think-end + delimiter``; a thinking closed at or before the budget gets only the
delimiter. Token ids are arbitrary (no tokenizer is needed to train on ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking

VOCAB = 100
THINK_END = 7
MARKER = [5, 6]
DELIMITER = [8, 9]


def make_thinking(gen: torch.Generator, length: int, budgets: Sequence[int], n_summary: int) -> Thinking:
    """A thinking of ``length`` tokens (closed unless it reaches the largest budget) with summaries."""
    closed = length < budgets[-1]
    prompt = torch.randint(10, VOCAB, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen).tolist()
    body = torch.randint(10, VOCAB, (length,), generator=gen).tolist()
    if closed:
        body[-1] = THINK_END
    cuts = [min(b, length) for b in budgets]
    summaries = []
    for b in budgets:
        inside = length > b or not closed
        inserted = MARKER + [THINK_END] + DELIMITER if inside else list(DELIMITER)
        per_budget = []
        for _ in range(n_summary):
            n = int(torch.randint(1, 7, (1,), generator=gen))
            sampled = torch.randint(10, VOCAB, (n,), generator=gen).tolist()
            reward = float(torch.randint(0, 2, (1,), generator=gen))
            per_budget.append(Summary(inserted_ids=inserted, sampled_ids=sampled, text="", reward=reward))
        summaries.append(per_budget)
    return Thinking(
        prompt_ids=prompt,
        thinking_ids=body,
        closed=closed,
        cuts=cuts,
        summaries=summaries,
        finish_reason="stop" if closed else "length",
    )


def make_rollouts(
    lengths: Sequence[Sequence[int]], budgets: Sequence[int], n_summary: int, seed: int = 0, same_prompt: bool = False
) -> RolloutBatch:
    """``lengths[b][g]`` thinking lengths → a RolloutBatch of B questions × G thinkings (``same_prompt``:
    a question's thinkings share its first thinking's prompt, as in a real rollout)."""
    gen = torch.Generator().manual_seed(seed)
    thinkings = [[make_thinking(gen, n, budgets, n_summary) for n in row] for row in lengths]
    if same_prompt:
        for row in thinkings:
            for t in row[1:]:
                t.prompt_ids = list(row[0].prompt_ids)
    return RolloutBatch(budgets=tuple(budgets), thinkings=thinkings)


def random_advantages(batch: RolloutBatch, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, G, S], [B, G, S, A])`` random advantages in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    B, G, S, A = batch.shape
    return torch.rand(B, G, S, generator=gen) * 2 - 1, torch.rand(B, G, S, A, generator=gen) * 2 - 1


def tiny_model(arch: str = "qwen2", attn: str = "sdpa", seed: int = 0, hidden: int = 32):
    """A random 2-layer causal LM (fp32) built from a config."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    config = config_cls(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    config._attn_implementation = attn
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.float().eval()
