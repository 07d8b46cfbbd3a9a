"""BRPO advantages for the thinking and summary policies (docs/ALGORITHM.md §5). Pure tensors, vectorized.

Notation: B questions, G thinkings each, S budgets, A summaries per budget.
``scores[b, g, s, a]`` is the reward of summary a after cutting thinking g of question b at budget s.

Thinking (every token of segment s gets ``A_think[b, g, s]``)::

    r[s]   = mean_a scores[s, a]
    R[s]   = Σ_{j≥s} P_j r[j]
    V2[s]  = mean_g R[s]                       (0 when G = 1)
    V1[s]  = (Σ_{k<s} 2^k r[k] / Σ_{k<s} 2^k) · Σ_{j≥s} P_j,   V1[0] = 0
    brpo:  baseline = (s·V1 + (S−s)·V2) / S;   v1only: V1;  v2only: V2;  none: 0

Summary: score minus the mean over all summaries sampled from the same prefix (A > 1): usually
the A of that budget, but when k budgets at or past the thinking's end share one prefix, all k·A
of them are pooled, as the original does (pass ``cuts`` ``[B, G, S]``: budgets with equal cuts share
a prefix). With A = 1 the baseline is the mean over the G thinkings at that budget. ``grpo`` keeps
only the last summary (s = S−1, a = A−1).

By default nothing is divided by a standard deviation (as in the seed): with S = 1, A = 1, the
``base`` prior and ``v2only`` this is GRPO without std normalization (Dr. GRPO). ``advantage_norm="std"``
divides by the group's standard deviation as GRPO (DeepSeekMath) and the peer methods built on it
train (L1, ThinkPrune, ShorterBetter, E1, DAPO; docs/BASELINES.md): a thinking's advantage at
budget s by the std over the G thinkings of ``R[s]``; a summary's by the std over the summaries its
baseline averages. As verl's ``compute_grpo_outcome_advantage``: the unbiased std (G − 1), plus
``STD_EPS`` = 1e-6, and a group of one is divided by 1.

Departure from a literal reading: the 2^k weights of V1 are computed as 2^(k−S+1) in float64, an
equal ratio that does not overflow for long budget grids; results are cast back to float32.
"""

from __future__ import annotations

from typing import Literal

import torch

VarianceReduction = Literal["brpo", "v1only", "v2only", "none"]
SummaryMethod = Literal["grpo", "brpo"]
AdvantageNorm = Literal["none", "std"]
VARIANCE_REDUCTIONS = ("brpo", "v1only", "v2only", "none")
SUMMARY_METHODS = ("grpo", "brpo")
ADVANTAGE_NORMS = ("none", "std")
STD_EPS = 1e-6  # verl's epsilon in (score - mean) / (std + eps)


def _reverse_cumsum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x.flip(dim).cumsum(dim).flip(dim)


def thinking_returns(scores: torch.Tensor, budget_probs: torch.Tensor) -> torch.Tensor:
    """``R[b, g, s] = Σ_{j≥s} P_j · r[b, g, j]``; scores ``[B, G, S, A]`` → ``[B, G, S]``."""
    probs = _normalized(budget_probs, scores.shape[2]).to(torch.float64)  # [S]
    rewards = scores.to(torch.float64).mean(dim=-1)  # [B, G, S]
    return _reverse_cumsum(rewards * probs, dim=-1)  # [B, G, S]


def thinking_advantages(
    scores: torch.Tensor,
    budget_probs: torch.Tensor,
    variance_reduction: VarianceReduction = "brpo",
    advantage_norm: AdvantageNorm = "none",
) -> torch.Tensor:
    """Per-segment advantages of the thinking policy.

    Args:
        scores: float ``[B, G, S, A]`` summary rewards.
        budget_probs: ``[S]`` prior weights (normalized here; need not sum to 1).
        variance_reduction: ``brpo`` | ``v1only`` | ``v2only`` | ``none``.
        advantage_norm: ``none`` | ``std`` (divide by the std over the G thinkings of ``R[s]`` + 1e-6).
    Returns:
        float32 ``[B, G, S]``.
    """
    _check_scores(scores)
    if variance_reduction not in VARIANCE_REDUCTIONS:
        raise ValueError(f"variance_reduction: unknown {variance_reduction!r}; allowed: {', '.join(VARIANCE_REDUCTIONS)}")
    _check_norm(advantage_norm)
    B, G, S, _ = scores.shape
    probs = _normalized(budget_probs, S).to(torch.float64)  # [S]
    rewards = scores.to(torch.float64).mean(dim=-1)  # [B, G, S]
    returns = _reverse_cumsum(rewards * probs, dim=-1)  # [B, G, S]
    if variance_reduction == "none":
        baseline = torch.zeros_like(returns)
    elif variance_reduction == "v2only":
        baseline = _group_baseline(returns)
    elif variance_reduction == "v1only":
        baseline = _own_history_baseline(rewards, probs)
    else:
        steps = torch.arange(S, dtype=torch.float64)  # [S]
        v1 = _own_history_baseline(rewards, probs)  # [B, G, S]
        v2 = _group_baseline(returns)  # [B, G, S]
        baseline = (steps * v1 + (S - steps) * v2) / S  # [B, G, S]
    advantages = returns - baseline  # [B, G, S]
    if advantage_norm == "std":
        advantages = advantages / (_group_std(returns, dim=1) + STD_EPS)  # [B, G, S] / [B, 1, S]
    return advantages.to(torch.float32)


def summary_advantages(
    scores: torch.Tensor,
    summary_method: SummaryMethod = "brpo",
    cuts: torch.Tensor | None = None,
    advantage_norm: AdvantageNorm = "none",
) -> torch.Tensor:
    """Per-summary advantages: ``[B, G, S, A]`` → float32 ``[B, G, S, A]``.

    Args:
        scores: ``[B, G, S, A]`` summary rewards.
        summary_method: ``grpo`` (only the last summary keeps its advantage) | ``brpo`` (all do).
        cuts: ``[B, G, S]`` thinking tokens kept at each budget (``RolloutBatch.cut_lengths()``).
            Budgets of one thinking with equal cuts share one summary prefix, and with A > 1 their
            summaries share one baseline. None: every budget has a prefix of its own.
        advantage_norm: ``none`` | ``std`` (divide by the std of the summaries the baseline
            averages, + 1e-6).
    """
    _check_scores(scores)
    if summary_method not in SUMMARY_METHODS:
        raise ValueError(f"summary_method: unknown {summary_method!r}; allowed: {', '.join(SUMMARY_METHODS)}")
    _check_norm(advantage_norm)
    scores = scores.to(torch.float32)
    std = advantage_norm == "std"
    spread = None
    if scores.shape[-1] == 1:
        baseline = scores.mean(dim=1, keepdim=True)  # [B, 1, S, 1] over the G thinkings
        spread = _group_std(scores, dim=1) if std else None  # [B, 1, S, 1]
    elif cuts is None:
        baseline = scores.mean(dim=-1, keepdim=True)  # [B, G, S, 1] over the A summaries
        spread = _group_std(scores, dim=-1) if std else None  # [B, G, S, 1]
    else:
        baseline, spread = _shared_prefix_stats(scores, cuts)  # [B, G, S, 1] each
    advantages = scores - baseline  # [B, G, S, A]
    if std and spread is not None:
        advantages = advantages / (spread + STD_EPS)  # [B, G, S, A]
    if summary_method == "grpo":
        keep = torch.zeros_like(advantages)
        keep[:, :, -1, -1] = 1.0
        advantages = advantages * keep
    return advantages


def _shared_prefix_stats(scores: torch.Tensor, cuts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of the scores of all summaries of the budgets sharing each budget's
    prefix (k budgets: k·A summaries; std 1 for a pool of one).

    scores ``[B, G, S, A]``, cuts ``[B, G, S]`` → (``[B, G, S, 1]``, ``[B, G, S, 1]``).
    """
    if cuts.shape != scores.shape[:3]:
        raise ValueError(f"cuts: expected shape {tuple(scores.shape[:3])}, got {tuple(cuts.shape)}")
    same = (cuts[..., :, None] == cuts[..., None, :]).to(scores.dtype)  # [B, G, S, S]
    pooled_sum = (same * scores.sum(dim=-1)[..., None, :]).sum(dim=-1)  # [B, G, S]
    pooled_squares = (same * (scores**2).sum(dim=-1)[..., None, :]).sum(dim=-1)  # [B, G, S]
    pooled_count = same.sum(dim=-1) * scores.shape[-1]  # [B, G, S] = k·A
    mean = pooled_sum / pooled_count  # [B, G, S]
    spread = (pooled_squares - pooled_count * mean**2).clamp_min(0.0) / (pooled_count - 1).clamp_min(1)  # [B, G, S]
    std = torch.where(pooled_count > 1, spread.sqrt(), torch.ones_like(spread))  # [B, G, S]
    return mean[..., None], std[..., None]


def _group_std(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Unbiased std along ``dim`` (kept as size 1); 1 where the group has a single member."""
    if values.shape[dim] == 1:
        return torch.ones_like(values)
    return values.std(dim=dim, keepdim=True)


def _own_history_baseline(rewards: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """V1: discounted mean of the rollout's own earlier-budget rewards times the remaining prior mass.

    rewards ``[B, G, S]`` (float64), probs ``[S]`` → ``[B, G, S]``.
    """
    S = rewards.shape[-1]
    weights = torch.pow(2.0, torch.arange(S, dtype=torch.float64) - (S - 1))  # [S] ∝ 2^k
    weighted = torch.cumsum(rewards * weights, dim=-1)  # [B, G, S] inclusive sums
    weighted = torch.nn.functional.pad(weighted, (1, 0))[..., :-1]  # [B, G, S] exclusive: Σ_{k<s}
    norm = torch.nn.functional.pad(torch.cumsum(weights, dim=0), (1, 0))[:-1]  # [S] Σ_{k<s} 2^k
    mean_before = weighted / norm.clamp_min(torch.finfo(torch.float64).tiny)  # [B, G, S]
    mean_before[..., 0] = 0.0
    tail_mass = _reverse_cumsum(probs, dim=0)  # [S] Σ_{j≥s} P_j
    return mean_before * tail_mass


def _group_baseline(returns: torch.Tensor) -> torch.Tensor:
    """V2: mean over the G thinkings of the same question (0 when G = 1). ``[B, G, S]``."""
    if returns.shape[1] == 1:
        return torch.zeros_like(returns)
    return returns.mean(dim=1, keepdim=True).expand_as(returns)


def _normalized(budget_probs: torch.Tensor, n_budgets: int) -> torch.Tensor:
    probs = torch.as_tensor(budget_probs, dtype=torch.float64).flatten()
    if probs.numel() != n_budgets:
        raise ValueError(f"budget_probs: {probs.numel()} weights for {n_budgets} budgets; lengths must match")
    if bool((probs < 0).any()) or float(probs.sum()) <= 0:
        raise ValueError("budget_probs: weights must be non-negative with a positive sum")
    return probs / probs.sum()


def _check_norm(advantage_norm: str) -> None:
    if advantage_norm not in ADVANTAGE_NORMS:
        raise ValueError(f"advantage_norm: unknown {advantage_norm!r}; allowed: {', '.join(ADVANTAGE_NORMS)}")


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 4:
        raise ValueError(f"scores: expected shape [B, G, S, A], got {tuple(scores.shape)}")
    if 0 in scores.shape:
        raise ValueError(f"scores: every dimension must be non-empty, got {tuple(scores.shape)}")


DIAGNOSTIC_BASELINES: tuple[tuple[str, VarianceReduction], ...] = (
    ("R", "none"),
    ("R_minus_V1", "v1only"),
    ("R_minus_V2", "v2only"),
    ("R_minus_V", "brpo"),
)


def brpo_diagnostics(
    scores: torch.Tensor, budget_probs: torch.Tensor, segment_mask: torch.Tensor | None = None
) -> dict[str, list[float | None]]:
    """Variances across rollouts, per budget, of R, R−V1, R−V2 and R−V, and their ratios to Var[R]
    (the quantity of the paper's Fig. 3).

    Args:
        scores: ``[B, G, S, A]`` summary rewards.
        budget_probs: ``[S]`` prior weights.
        segment_mask: bool ``[B, G, S]`` (``RolloutBatch.segment_mask()``): budget s of a thinking
            counts only if its segment is non-empty, i.e. the thinking had not ended before
            b_{s-1} — as the original masks budgets past the thinking's end. None: all count.
    Returns:
        ``var_R``, ``var_R_minus_V1``, ``var_R_minus_V2``, ``var_R_minus_V`` (population variance
        over the counted thinkings) and ``ratio_R_minus_V1``, ``ratio_R_minus_V2``,
        ``ratio_R_minus_V`` (each variance / ``var_R``), lists of S floats; an entry is None where
        fewer than two thinkings count, and a ratio is None where ``var_R`` is 0.
    """
    B, G, S, _ = scores.shape
    mask = torch.ones(B, G, S, dtype=torch.bool) if segment_mask is None else segment_mask.to(torch.bool)
    mask = mask.reshape(-1, S).to(torch.float64)  # [B·G, S]
    count = mask.sum(dim=0)  # [S]
    variances: dict[str, torch.Tensor] = {}
    for name, vr in DIAGNOSTIC_BASELINES:
        adv = thinking_advantages(scores, budget_probs, vr).to(torch.float64).reshape(-1, S)  # [B·G, S]
        mean = (adv * mask).sum(dim=0) / count.clamp_min(1)  # [S]
        variances[name] = (((adv - mean) ** 2) * mask).sum(dim=0) / count.clamp_min(1)  # [S]
    enough = (count >= 2).tolist()
    out: dict[str, list[float | None]] = {}
    for name, var in variances.items():
        out[f"var_{name}"] = [float(v) if ok else None for v, ok in zip(var.tolist(), enough, strict=False)]
    var_r = variances["R"].tolist()
    for name, var in variances.items():
        if name != "R":
            out[f"ratio_{name}"] = [
                float(v / r) if ok and r > 0 else None for v, r, ok in zip(var.tolist(), var_r, enough, strict=False)
            ]
    return out
