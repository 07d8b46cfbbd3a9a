"""The length-aware reward terms against their papers' formulas, with hand-computed values."""

import pytest
import torch

from anytime_reasoner.algo.length_rewards import (
    LengthShaping,
    hard_limit,
    l1_exact,
    l1_max,
    overlong_penalty,
    sample_optimal_length,
    shape_rewards,
    shorter_better,
)
from anytime_reasoner.config import LengthConfig


def _one_budget(correct, lengths):
    """B = 1 question, G thinkings, S = A = 1: ``[1, G, 1, 1]`` and ``[1, G, 1]``."""
    return torch.tensor(correct, dtype=torch.float32)[None, :, None, None], torch.tensor(lengths)[None, :, None]


def test_l1_exact_is_correct_minus_alpha_times_the_gap():
    correct, lengths = _one_budget([1, 1, 0], [100, 40, 70])
    rewards = l1_exact(correct, lengths, torch.tensor([60]), alpha=0.01)
    # |60 − 100| = 40 → 1 − 0.4 = 0.6;  |60 − 40| = 20 → 1 − 0.2 = 0.8;  |60 − 70| = 10 → 0 − 0.1 = −0.1
    assert rewards.flatten().tolist() == pytest.approx([0.6, 0.8, -0.1])


def test_l1_max_clips_the_slack_and_pays_only_correct_answers():
    correct, lengths = _one_budget([1, 1, 1, 0], [100, 60, 0, 10])
    rewards = l1_max(correct, lengths, torch.tensor([60]), alpha=0.01, delta=0.5)
    # 0.01·(60 − 100) + 0.5 = 0.1;  0.01·0 + 0.5 = 0.5;  0.01·60 + 0.5 = 1.1 → clipped to 1;  wrong → 0
    assert rewards.flatten().tolist() == pytest.approx([0.1, 0.5, 1.0, 0.0])


def test_l1_targets_are_per_question():
    correct = torch.ones(2, 1, 1, 1)
    lengths = torch.tensor([[[50]], [[50]]])
    rewards = l1_exact(correct, lengths, torch.tensor([50, 80]), alpha=0.01)
    assert rewards.flatten().tolist() == pytest.approx([1.0, 0.7])  # gaps 0 and 30


def test_sample_optimal_length_is_the_shortest_correct_else_the_mean():
    correct = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.float32)[:, :, None, None]  # [2, 3, 1, 1]
    lengths = torch.tensor([[90, 20, 50], [30, 60, 90]])[:, :, None]
    # question 0: correct lengths 90 and 50 → 50 (the wrong 20 does not count); question 1: none correct → mean 60
    assert sample_optimal_length(correct, lengths).flatten().tolist() == [50.0, 60.0]


def test_shorter_better_rewards_closeness_to_the_sol():
    correct, lengths = _one_budget([1, 0, 1], [90, 20, 50])
    rewards = shorter_better(correct, lengths, alpha=2.0, beta=0.01)
    # SOL = 50:  2·1 − 0.01·40 = 1.6;  2·0 − 0.01·30 = −0.3;  2·1 − 0 = 2.0
    assert rewards.flatten().tolist() == pytest.approx([1.6, -0.3, 2.0])


def test_dapo_soft_overlong_punishment():
    # L = 100, C = 20: no penalty up to 80, linear to −1 at 100, −1 beyond
    penalty = overlong_penalty(torch.tensor([50, 80, 90, 100, 120]), max_len=100, cache_len=20)
    assert penalty.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])  # (80 − 90)/20 = −0.5
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(torch.tensor([1]), max_len=10, cache_len=0)


def test_hard_limit_zeroes_thinkings_not_closed_within_it():
    correct, _ = _one_budget([1, 1, 0], [0, 0, 0])
    within = torch.tensor([True, False, True])[None, :, None]
    assert hard_limit(correct, within).flatten().tolist() == [1.0, 0.0, 0.0]


def test_defaults_scale_the_papers_per_token_coefficients_to_the_budget():
    # α = 0.0003 at 4,000 tokens: at a 108-token budget 0.0003 · 4000 / 108 = 0.01111 (a full-budget gap costs 1.2)
    spec = LengthShaping.at_budget(108, **LengthConfig().shaping_knobs())
    assert spec.l1_alpha == pytest.approx(0.0003 * 4000 / 108) and spec.l1_alpha * 108 == pytest.approx(1.2)
    assert spec.sb_beta == pytest.approx(0.001 * 4000 / 108)
    assert not spec.active
    explicit = LengthShaping.at_budget(4000, **LengthConfig(l1_alpha=0.0003, sb_beta=0.001).shaping_knobs())
    assert (explicit.l1_alpha, explicit.sb_beta) == (0.0003, 0.001)


def _rollout():
    """B = 1, G = 2, S = 2 budgets (50, 100), A = 2. Thinking 0 closes at 40; thinking 1 runs to the cap."""
    correct = torch.tensor([[[[1, 0], [1, 1]], [[0, 0], [1, 0]]]], dtype=torch.float32)  # [1, 2, 2, 2]
    lengths = torch.tensor([[[40, 40], [50, 100]]])  # [1, 2, 2]
    within = torch.tensor([[[True, True], [False, False]]])
    truncated = torch.tensor([[False, True]])
    return correct, lengths, within, truncated


def test_shape_rewards_without_pieces_is_the_identity():
    correct, lengths, within, truncated = _rollout()
    rewards, think_keep, summary_keep = shape_rewards(correct, lengths, within, truncated, (50, 100), LengthShaping())
    assert torch.equal(rewards, correct)
    assert bool((think_keep == 1).all()) and bool((summary_keep == 1).all())


def test_shape_rewards_hard_limit_drops_the_forced_answers():
    correct, lengths, within, truncated = _rollout()
    rewards, think_keep, summary_keep = shape_rewards(
        correct, lengths, within, truncated, (50, 100), LengthShaping(hard_limit=True)
    )
    assert rewards[0, 1].sum() == 0 and torch.equal(rewards[0, 0], correct[0, 0])  # thinking 1 never closed
    assert summary_keep[0, 1].sum() == 0 and summary_keep[0, 0].sum() == 4  # its summaries get no loss
    assert think_keep.sum() == 4  # its thinking is trained (toward reward 0)


def test_shape_rewards_overlong_shaping_and_filtering():
    correct, lengths, within, truncated = _rollout()
    spec = LengthShaping(overlong_cache=0.2, overlong_filter=True)
    rewards, think_keep, summary_keep = shape_rewards(correct, lengths, within, truncated, (50, 100), spec)
    # budget 50: C = 10, soft zone (40, 50]: n = 40 → 0, n = 50 → −1;  budget 100: C = 20: n = 40 → 0, n = 100 → −1
    penalty = rewards - correct
    assert penalty[0, 0].flatten().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert penalty[0, 1].flatten().tolist() == [-1.0, -1.0, -1.0, -1.0]
    assert think_keep[0].tolist() == [[1.0, 1.0], [0.0, 0.0]]  # the truncated thinking leaves the loss
    assert summary_keep[0, 1].sum() == 0


def test_shape_rewards_l1_needs_targets():
    correct, lengths, within, truncated = _rollout()
    spec = LengthShaping(reward="l1-exact", l1_alpha=0.01)
    with pytest.raises(ValueError, match="targets"):
        shape_rewards(correct, lengths, within, truncated, (50, 100), spec)
    rewards, _, _ = shape_rewards(correct, lengths, within, truncated, (50, 100), spec, torch.tensor([50]))
    # thinking 1 at budget 100: n = 100, N = 50 → 1 − 0.5 = 0.5 and 0 − 0.5 = −0.5
    assert rewards[0, 1, 1].tolist() == pytest.approx([0.5, -0.5])


def test_dapo_rewards_plus_minus_one_and_a_truncated_response_has_no_answer():
    correct, lengths, within, truncated = _rollout()
    spec = LengthShaping(incorrect_reward=-1.0, hard_limit=True, overlong_cache=0.2, overlong_filter=True)
    rewards, think_keep, summary_keep = shape_rewards(correct, lengths, within, truncated, (50, 100), spec)
    # thinking 0 (closed at 40, no overlong penalty): right → 1, wrong → 1 − 1·(1 − 0) = −1 … as ±1
    assert rewards[0, 0].tolist() == [[1.0, -1.0], [1.0, 1.0]]
    # thinking 1 never closed: no answer → −1 even where its forced summary was right, plus the overlong
    # penalty of its cut (budget 50: n = 50 = L → −1; budget 100: n = 100 = L → −1) = −2
    assert rewards[0, 1].tolist() == [[-2.0, -2.0], [-2.0, -2.0]]
    assert think_keep[0].tolist() == [[1.0, 1.0], [0.0, 0.0]] and summary_keep[0, 1].sum() == 0  # filtered


def test_incorrect_reward_adds_to_wrong_answers_under_a_length_reward():
    correct, lengths, within, truncated = _rollout()
    spec = LengthShaping(reward="shorter-better", sb_alpha=2.0, sb_beta=0.0, incorrect_reward=-0.5)
    rewards, _, _ = shape_rewards(correct, lengths, within, truncated, (50, 100), spec)
    # β = 0: ShorterBetter is 2·correct; a wrong answer adds −0.5 → 2 or −0.5
    assert rewards[0, 0].tolist() == [[2.0, -0.5], [2.0, 2.0]]
