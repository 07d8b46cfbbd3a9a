"""Rollout/trainer agreement: how far the engine's sampling log-probs are from the trainer's, and
truncated importance sampling (TIS) to correct for it. Pure tensors: no model, no I/O.

The engine that samples (vLLM, or ``generate`` under bf16) and the trainer that recomputes the
old log-probs never agree exactly (kernels, precision, batch shapes), so the samples are slightly
off-policy for the PPO ratio's denominator. Per sampled token with an engine log-prob,

    Δ = old_logprob − rollout_logprob,    r = exp(Δ) = π_old / π_rollout,

is logged every step (:func:`mismatch_sums` → :func:`mismatch_metrics`: mean and max |Δ|, and
the mean, std, min and max of r), and with ``ppo.tis_cap = C > 0`` each token's PPO loss is
multiplied by ``min(r, C)`` (:func:`tis_weights`, detached) — the truncated importance weight of
verl (``tis_imp_ratio_cap``) and TRL (``vllm_importance_sampling_cap``, 2 by default there).
Tokens without an engine log-prob (NaN) get weight 1 and are not counted.

Asynchronous rollouts (``trainer.async_level = k ≥ 1``) make the same ratio the correction for the
lag: the sampling policy is k updates older than the one the trainer recomputes ``old`` with.
Beside TIS, :func:`decoupled_weights` is AReaL's decoupled PPO objective (Fu et al., 2025): the
clipped ratio is taken against the *proximal* policy (``old``, the trainer's weights when the batch
is trained) and each token's loss is multiplied by ``π_prox / π_behav`` itself, untruncated, except
that tokens whose weight exceeds a cap (AReaL's ``behav_imp_weight_cap``) are dropped (weight 0).
:func:`correction_sums` counts the tokens either correction changed (truncated or dropped).
"""

from __future__ import annotations

import math

import torch

SUMS = ("count", "abs_sum", "ratio_sum", "ratio_sq_sum")  # added over ranks
MINS = ("ratio_min",)
MAXS = ("abs_max", "ratio_max")


def _known(rollout_logprobs: torch.Tensor, trainable_mask: torch.Tensor) -> torch.Tensor:
    return trainable_mask.to(torch.bool) & ~torch.isnan(rollout_logprobs)  # [N, T]


def mismatch_sums(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, trainable_mask: torch.Tensor) -> dict[str, float]:
    """Sums, minima and maxima over the tokens that have an engine log-prob (all ``[N, T]``),
    ready to be combined over ranks (``SUMS`` add, ``MINS``/``MAXS`` reduce)."""
    known = _known(rollout_logprobs, trainable_mask)  # [N, T]
    delta = (old_logprobs.double() - rollout_logprobs.double())[known]  # [K], float64: the std is a difference of sums
    if not delta.numel():
        return {
            "count": 0.0,
            "abs_sum": 0.0,
            "ratio_sum": 0.0,
            "ratio_sq_sum": 0.0,
            "ratio_min": math.inf,
            "abs_max": 0.0,
            "ratio_max": -math.inf,
        }
    ratio = torch.exp(delta.clamp(-20.0, 20.0))  # [K]
    return {
        "count": float(delta.numel()),
        "abs_sum": float(delta.abs().sum()),
        "ratio_sum": float(ratio.sum()),
        "ratio_sq_sum": float((ratio * ratio).sum()),
        "ratio_min": float(ratio.min()),
        "abs_max": float(delta.abs().max()),
        "ratio_max": float(ratio.max()),
    }


def mismatch_metrics(sums: dict[str, float]) -> dict[str, float]:
    """``rollout_*`` metrics from :func:`mismatch_sums` (empty when no token had an engine log-prob)."""
    n = sums["count"]
    if not n:
        return {}
    mean = sums["ratio_sum"] / n
    return {
        "rollout_logprob_tokens": n,
        "rollout_logprob_diff_mean": sums["abs_sum"] / n,
        "rollout_logprob_diff_max": sums["abs_max"],
        "rollout_ratio_mean": mean,
        "rollout_ratio_std": math.sqrt(max(sums["ratio_sq_sum"] / n - mean * mean, 0.0)),
        "rollout_ratio_min": sums["ratio_min"],
        "rollout_ratio_max": sums["ratio_max"],
    }


def tis_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """``min(exp(old − rollout), cap)`` per token, 1 where the engine gave no log-prob; ``[N, T]``, no grad."""
    if cap <= 0:
        raise ValueError(f"tis_cap: must be > 0, got {cap}")
    delta = (old_logprobs.detach().float() - rollout_logprobs.float()).clamp(-20.0, 20.0)  # [N, T]
    weights = torch.exp(delta).clamp(max=cap)  # [N, T]
    return torch.where(torch.isnan(rollout_logprobs), torch.ones_like(weights), weights)


def decoupled_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, cap: float | None) -> torch.Tensor:
    """AReaL's behaviour weights ``exp(old − rollout)`` per token, 0 where they exceed ``cap``
    (None: no cap), 1 where the engine gave no log-prob; ``[N, T]``, no grad."""
    delta = (old_logprobs.detach().float() - rollout_logprobs.float()).clamp(-20.0, 20.0)  # [N, T]
    weights = torch.exp(delta)  # [N, T]
    if cap is not None:
        weights = torch.where(weights > cap, torch.zeros_like(weights), weights)
    return torch.where(torch.isnan(rollout_logprobs), torch.ones_like(weights), weights)


def corrected_share(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, trainable_mask: torch.Tensor, weights: torch.Tensor
) -> tuple[float, float]:
    """(tokens whose weight differs from their raw ratio ``exp(old − rollout)``: truncated or
    dropped, tokens with an engine log-prob) over ``[N, T]`` inputs: the numerator and denominator
    of the share a correction changed."""
    known = _known(rollout_logprobs, trainable_mask)  # [N, T]
    raw = torch.exp((old_logprobs.float() - rollout_logprobs.float()).clamp(-20.0, 20.0))  # [N, T]
    changed = known & (weights.float() != raw)  # [N, T]
    return float(changed.sum()), float(known.sum())
