"""PPO clipped policy loss over tokens (docs/ALGORITHM.md §6). Pure tensors: no model, no I/O.

The loss is a *sum* of masked token losses divided by a ``normalizer`` that the caller fixes for
the whole mini-batch (:func:`loss_normalizer`). Dividing every micro-batch by the same mini-batch
normalizer makes gradient accumulation exact: the gradients of 1 or of k micro-batches add up to
the same value.

Aggregations:
- ``constant`` (the seed's, Dr. GRPO): token-loss sum / (rows in the mini-batch × max response length).
- ``token-mean``: token-loss sum / number of trainable tokens in the mini-batch.
"""

from __future__ import annotations

from typing import Literal

import torch

LossAgg = Literal["constant", "token-mean"]
LOSS_AGGS = ("constant", "token-mean")


def loss_normalizer(trainable_mask: torch.Tensor, agg: LossAgg, max_response_len: int | None = None) -> float:
    """The denominator for a mini-batch whose trainable mask is ``[N, T]`` (N rows)."""
    count = trainable_mask.shape[0] if agg == "constant" else int(trainable_mask.sum())
    return normalizer_of_count(count, agg, max_response_len)


def normalizer_of_count(count: int, agg: LossAgg, max_response_len: int | None = None) -> float:
    """The denominator from a count: rows (rollouts) for ``constant``, trainable tokens for ``token-mean``."""
    if agg == "constant":
        if not max_response_len or max_response_len < 1:
            raise ValueError("max_response_len: required (>= 1) for loss_agg=constant")
        return float(count * max_response_len)
    if agg == "token-mean":
        return float(max(count, 1))
    raise ValueError(f"loss_agg: unknown {agg!r}; allowed: {', '.join(LOSS_AGGS)}")


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    trainable_mask: torch.Tensor,
    *,
    normalizer: float,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate ``max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε_high))`` summed over trainable tokens / normalizer.

    Args:
        logprobs: ``[N, T]`` log-probs of the taken tokens under the current policy (with grad).
        old_logprobs: ``[N, T]`` log-probs under the policy that sampled them (no grad).
        advantages: ``[N, T]`` per-token advantages.
        trainable_mask: ``[N, T]`` bool, True for sampled tokens to train.
        normalizer: from :func:`loss_normalizer` for the whole mini-batch.
        clip_eps: ε, the lower clip range (and the upper one unless ``clip_eps_high`` is given).
        clip_eps_high: DAPO's clip-higher: a wider upper range ε_high (DAPO: 0.28 with ε = 0.2);
            None = ε (symmetric).
        token_weights: ``[N, T]`` (no grad) multiplying each token's loss, e.g. truncated
            importance weights (``algo.off_policy.tis_weights``); None = 1.
    Returns:
        ``(loss, metrics)``: a scalar loss and detached scalars ``clip_frac``, ``approx_kl``
        (mean old−new log-prob), ``ratio_min``, ``ratio_max``, ``n_tokens``.
    """
    mask = trainable_mask.to(torch.bool)  # [N, T]
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-20.0, 20.0)  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]
    unclipped = -advantages * ratio  # [N, T]
    high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + high)  # [N, T]
    token_loss = torch.maximum(unclipped, clipped)  # [N, T]
    if token_weights is not None:
        token_loss = token_loss * token_weights.detach()  # [N, T]
    loss = torch.where(mask, token_loss, torch.zeros_like(token_loss)).sum() / normalizer
    with torch.no_grad():
        n_tokens = mask.sum()
        count = n_tokens.clamp_min(1).to(ratio.dtype)
        masked_ratio = ratio[mask]
        metrics = {
            "clip_frac": ((clipped > unclipped) & mask).sum() / count,
            "approx_kl": (-log_ratio * mask).sum() / count,
            "ratio_min": masked_ratio.min() if masked_ratio.numel() else ratio.new_tensor(1.0),
            "ratio_max": masked_ratio.max() if masked_ratio.numel() else ratio.new_tensor(1.0),
            "n_tokens": n_tokens.to(ratio.dtype),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
