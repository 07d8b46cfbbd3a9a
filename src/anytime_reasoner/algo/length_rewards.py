"""Length-aware reward terms of the budget-aware RL methods (docs/BASELINES.md). Pure tensors.

Every term maps the correctness rewards of a rollout, ``correct[b, g, s, a]`` ∈ {0, 1} (the
grader's, the format rule already applied), and the thinking tokens kept at each cut,
``lengths[b, g, s]``, to the rewards the advantages are computed from:

- **L1 / LCPO** (Aggarwal & Welleck, arXiv 2503.04697), target ``N[b]`` stated in the prompt:
  Exact ``r = correct − α·|N − n|``; Max ``r = correct · clip(α·(N − n) + δ, 0, 1)``.
- **ShorterBetter** (Yi et al., arXiv 2504.21370): ``r = α·correct − β·|n − SOL|`` with SOL the
  shortest correct length among the question's samples, or their mean length when none is correct.
- **ThinkPrune** (Hou et al., arXiv 2504.01296): a hard limit; a thinking that did not close itself
  within it scores 0 (its forced answer is not trained either). The same rule at the step's cap is
  how L1, ShorterBetter and DAPO treat a truncated response: it has no answer.
- **DAPO's reward scale** (``incorrect_reward``): a wrong (or unanswered) response scores −1, not 0.
- **DAPO soft overlong punishment** (Yu et al., arXiv 2503.14476), added to the reward:
  ``0`` for ``n ≤ L − C``, ``((L − C) − n) / C`` for ``L − C < n ≤ L``, ``−1`` past ``L``
  (``L`` the length cap, ``C`` the cache length); **overlong filtering** drops the truncated
  thinkings from the loss (``overlong_keep``).

Choices where the papers leave room (or speak of one long response rather than a thinking with a
forced summary); docs/BASELINES.md lists them with the presets:

- ``n`` counts *thinking* tokens kept at the cut: the quantity every budget here governs and the
  one evaluation reports as tokens used. The summary is capped at ``summary_max_tokens`` for every
  method alike.
- Per-token coefficients (L1's α, ShorterBetter's β) default to the papers' values at 4,000 tokens
  scaled by 4000 / ``rollout.max_budget`` (:meth:`LengthShaping.at_budget`), so a full-budget
  length gap costs what it costs in the paper.
- ShorterBetter's SOL is taken per budget over all G·A summaries of the question at that budget
  (with S = A = 1, the paper's group of G).
- ThinkPrune's truncated thinkings (and, at the step's cap, L1's, ShorterBetter's and DAPO's:
  ``hard_limit`` in their presets) still get the forced summary of the cut protocol (one rollout
  serves every method), but it scores as wrong and is not trained; the thinking is trained toward
  that score (0, or DAPO's −1 through ``incorrect_reward``).
  Its rounds of tightening limits are one run with a step schedule (``length.cap_schedule``).
- E1's budget-constrained rollout is the cut protocol at t* = ``cap_schedule`` × the budget (the
  forced text is the project's cut marker + ``</think>`` + answer delimiter, as AnytimeReasoner's),
  trained with GRPO: ``grpo`` with ``rollout.max_budget`` = t*. No term here is needed for it.
- DAPO's ``L`` is each budget of the step; the thinking cannot pass it, so ``−1`` is reached at
  the cap. Overlong filtering multiplies the loss of every token of a truncated thinking by 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PAPER_BUDGET = 4000  # the length at which L1's α = 0.0003 and ShorterBetter's β = 0.001 are quoted
L1_ALPHA = 0.0003
SB_BETA = 0.001


def l1_exact(correct: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """LCPO-Exact: ``correct − α·|N − n|``.

    Args:
        correct: ``[B, G, S, A]`` rewards in {0, 1}.
        lengths: ``[B, G, S]`` thinking tokens kept at each cut (n).
        targets: ``[B]`` target lengths N stated in each question's prompt.
    Returns:
        float32 ``[B, G, S, A]``.
    """
    gap = (targets.to(torch.float32)[:, None, None] - lengths.to(torch.float32)).abs()  # [B, G, S]
    return correct.to(torch.float32) - alpha * gap[..., None]


def l1_max(correct: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, alpha: float, delta: float) -> torch.Tensor:
    """LCPO-Max: ``correct · clip(α·(N − n) + δ, 0, 1)`` (shapes as :func:`l1_exact`)."""
    slack = targets.to(torch.float32)[:, None, None] - lengths.to(torch.float32)  # [B, G, S]
    return correct.to(torch.float32) * (alpha * slack + delta).clamp(0.0, 1.0)[..., None]


def sample_optimal_length(correct: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """ShorterBetter's SOL per question and budget: the shortest length among correct summaries,
    else the mean length of the question's thinkings. ``[B, G, S, A]``, ``[B, G, S]`` → ``[B, S]``."""
    n = lengths.to(torch.float32)[..., None].expand_as(correct)  # [B, G, S, A]
    hit = correct > 0.5
    shortest = torch.where(hit, n, torch.full_like(n, float("inf"))).amin(dim=(1, 3))  # [B, S]
    mean = lengths.to(torch.float32).mean(dim=1)  # [B, S]
    return torch.where(hit.any(dim=3).any(dim=1), shortest, mean)


def shorter_better(correct: torch.Tensor, lengths: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """ShorterBetter: ``α·correct − β·|n − SOL|``; ``[B, G, S, A]``, ``[B, G, S]`` → ``[B, G, S, A]``."""
    sol = sample_optimal_length(correct, lengths)  # [B, S]
    gap = (lengths.to(torch.float32) - sol[:, None, :]).abs()  # [B, G, S]
    return alpha * correct.to(torch.float32) - beta * gap[..., None]


def overlong_penalty(lengths: torch.Tensor, max_len: int, cache_len: int) -> torch.Tensor:
    """DAPO's soft overlong punishment of each length, float32 of ``lengths``' shape (≤ 0)."""
    if not 0 < cache_len <= max_len:
        raise ValueError(f"cache_len: must be in [1, max_len={max_len}], got {cache_len}")
    n = lengths.to(torch.float32)
    soft = ((max_len - cache_len) - n) / cache_len
    return torch.where(n <= max_len - cache_len, torch.zeros_like(n), torch.where(n <= max_len, soft, -torch.ones_like(n)))


def hard_limit(correct: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """ThinkPrune: reward 0 where the thinking did not close itself within the limit.
    ``correct`` ``[B, G, S, A]``, ``within`` bool ``[B, G, S]`` → float32 ``[B, G, S, A]``."""
    return correct.to(torch.float32) * within[..., None].to(torch.float32)


@dataclass(frozen=True)
class LengthShaping:
    """Resolved length-method knobs (``length.*`` with the per-token defaults filled in)."""

    reward: str = "none"  # none | l1-exact | l1-max | shorter-better
    l1_alpha: float = 0.0
    l1_delta: float = 0.5
    sb_alpha: float = 2.0
    sb_beta: float = 0.0
    hard_limit: bool = False
    overlong_cache: float = 0.0  # fraction of each budget
    overlong_filter: bool = False
    incorrect_reward: float = 0.0  # added to the reward of a wrong or unanswered response (DAPO: -1)

    @classmethod
    def at_budget(
        cls,
        max_budget: int,
        *,
        reward: str = "none",
        l1_alpha: float | None = None,
        l1_delta: float = 0.5,
        sb_alpha: float = 2.0,
        sb_beta: float | None = None,
        hard_limit: bool = False,
        overlong_cache: float = 0.0,
        overlong_filter: bool = False,
        incorrect_reward: float = 0.0,
    ) -> LengthShaping:
        """The knobs with the per-token defaults filled in (``None``): the papers' value at 4,000
        tokens times 4000 / ``max_budget``, so a full-budget length gap costs what it costs in the
        paper (α = 0.0003 → 1.2 for L1). The trainer passes ``length.*`` here (``LengthConfig.shaping_knobs``)."""
        scale = PAPER_BUDGET / max_budget
        return cls(
            reward=reward,
            l1_alpha=l1_alpha if l1_alpha is not None else L1_ALPHA * scale,
            l1_delta=l1_delta,
            sb_alpha=sb_alpha,
            sb_beta=sb_beta if sb_beta is not None else SB_BETA * scale,
            hard_limit=hard_limit,
            overlong_cache=overlong_cache,
            overlong_filter=overlong_filter,
            incorrect_reward=incorrect_reward,
        )

    @property
    def active(self) -> bool:
        return (
            self.reward != "none"
            or self.hard_limit
            or self.overlong_cache > 0
            or self.overlong_filter
            or self.incorrect_reward != 0
        )


def shape_rewards(
    correct: torch.Tensor,
    lengths: torch.Tensor,
    within: torch.Tensor,
    truncated: torch.Tensor,
    budgets: Sequence[int],
    spec: LengthShaping,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rewards advantages are computed from, and which tokens keep their loss.

    Args:
        correct: ``[B, G, S, A]`` grader rewards in {0, 1}.
        lengths: ``[B, G, S]`` thinking tokens kept at each cut.
        within: bool ``[B, G, S]``: the thinking closed itself within budget s.
        truncated: bool ``[B, G]``: the thinking hit the largest budget without closing.
        budgets: the S budgets of the step.
        targets: ``[B]`` L1 target lengths (needed for the L1 rewards).
    Returns:
        rewards float32 ``[B, G, S, A]``; thinking_keep ``[B, G, S]`` and summary_keep
        ``[B, G, S, A]`` (1 = trained, 0 = loss dropped).
    """
    rewards = correct.to(torch.float32)
    if spec.hard_limit:
        rewards = hard_limit(rewards, within)
    answered_right = rewards  # [B, G, S, A] in {0, 1}: correct and (under a hard limit) within it
    if spec.reward in ("l1-exact", "l1-max"):
        if targets is None:
            raise ValueError(f"length.reward={spec.reward} needs the per-question targets")
        if spec.reward == "l1-exact":
            rewards = l1_exact(rewards, lengths, targets, spec.l1_alpha)
        else:
            rewards = l1_max(rewards, lengths, targets, spec.l1_alpha, spec.l1_delta)
    elif spec.reward == "shorter-better":
        rewards = shorter_better(rewards, lengths, spec.sb_alpha, spec.sb_beta)
    if spec.incorrect_reward:
        rewards = rewards + spec.incorrect_reward * (1.0 - answered_right)
    if spec.overlong_cache > 0:
        penalty = torch.stack(
            [overlong_penalty(lengths[..., s], b, max(1, round(spec.overlong_cache * b))) for s, b in enumerate(budgets)],
            dim=-1,
        )  # [B, G, S]
        rewards = rewards + penalty[..., None]
    think_keep = torch.ones(lengths.shape, dtype=torch.float32)  # [B, G, S]
    summary_keep = torch.ones(correct.shape, dtype=torch.float32)  # [B, G, S, A]
    if spec.hard_limit:  # no answer after a thinking past the limit: its forced summary is not trained
        summary_keep = summary_keep * within[..., None].to(torch.float32)
    if spec.overlong_filter:
        kept = (~truncated).to(torch.float32)  # [B, G]
        think_keep = think_keep * kept[..., None]
        summary_keep = summary_keep * kept[..., None, None]
    return rewards, think_keep, summary_keep
