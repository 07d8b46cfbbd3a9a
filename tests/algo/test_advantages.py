"""Advantages: hand-computed cases (arithmetic in comments) and a loop reference on random inputs."""

import pytest
import torch

from anytime_reasoner.algo.advantages import summary_advantages, thinking_advantages
from anytime_reasoner.seeding import derive_seed


def reference_thinking(scores, probs, vr):
    """Literal, loop-by-loop transcription of docs/ALGORITHM.md §5 (independent of the vectorized code)."""
    B, G, S, A = scores.shape
    P = [float(p) / float(sum(probs)) for p in probs]
    r = [[[sum(float(scores[b, g, s, a]) for a in range(A)) / A for s in range(S)] for g in range(G)] for b in range(B)]
    out = torch.zeros(B, G, S, dtype=torch.float64)
    for b in range(B):
        R = [[sum(P[j] * r[b][g][j] for j in range(s, S)) for s in range(S)] for g in range(G)]
        for g in range(G):
            for s in range(S):
                v2 = sum(R[gg][s] for gg in range(G)) / G if G > 1 else 0.0
                if s == 0:
                    v1 = 0.0
                else:
                    num = sum(2**k * r[b][g][k] for k in range(s))
                    den = sum(2**k for k in range(s))
                    v1 = num / den * sum(P[j] for j in range(s, S))
                base = {"brpo": (s * v1 + (S - s) * v2) / S, "v1only": v1, "v2only": v2, "none": 0.0}[vr]
                out[b, g, s] = R[g][s] - base
    return out


def reference_summary(scores, method, cuts=None):
    B, G, S, A = scores.shape
    out = torch.zeros(B, G, S, A, dtype=torch.float64)
    for b in range(B):
        for g in range(G):
            for s in range(S):
                # budgets whose prefix is this budget's (equal cuts); without cuts, only s itself
                shared = [j for j in range(S) if (j == s if cuts is None else int(cuts[b, g, j]) == int(cuts[b, g, s]))]
                for a in range(A):
                    if A > 1:
                        mean = sum(float(scores[b, g, j, x]) for j in shared for x in range(A)) / (len(shared) * A)
                    else:
                        mean = sum(float(scores[b, x, s, 0]) for x in range(G)) / G
                    keep = method == "brpo" or (s == S - 1 and a == A - 1)
                    out[b, g, s, a] = (float(scores[b, g, s, a]) - mean) if keep else 0.0
    return out


def test_hand_computed_brpo_two_rollouts_three_budgets():
    # uniform prior P = 1/3 each; rollout 0 rewards r = [1, 0, 1], rollout 1 r = [0, 0, 1]
    scores = torch.tensor([[[[1.0], [0.0], [1.0]], [[0.0], [0.0], [1.0]]]])  # [1, 2, 3, 1]
    # R(g0) = [2/3, 1/3, 1/3], R(g1) = [1/3, 1/3, 1/3]; V2 = [1/2, 1/3, 1/3]
    # V1(g0) = [0, 1·(2/3), (1·1 + 2·0)/3 · 1/3] = [0, 2/3, 1/9]
    # baseline(g0) = [(0 + 3·1/2)/3, (1·2/3 + 2·1/3)/3, (2·1/9 + 1·1/3)/3] = [1/2, 4/9, 5/27]
    # A(g0) = [2/3 − 1/2, 1/3 − 4/9, 1/3 − 5/27] = [1/6, −1/9, 4/27]
    # V1(g1) = [0, 0, 0]; baseline(g1) = [1/2, 2/9, 1/9]; A(g1) = [−1/6, 1/9, 2/9]
    adv = thinking_advantages(scores, torch.tensor([1.0, 1.0, 1.0]), "brpo")
    expected = torch.tensor([[[1 / 6, -1 / 9, 4 / 27], [-1 / 6, 1 / 9, 2 / 9]]])
    torch.testing.assert_close(adv, expected)


def test_linear_prior_v1only_and_none():
    # budgets {1,2}: linear prior P = [1/3, 2/3]; one rollout, A = 2 summaries
    scores = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # r = [0.5, 1.0]
    probs = torch.tensor([1.0, 2.0])
    # R = [1/3·0.5 + 2/3·1, 2/3·1] = [5/6, 2/3]
    torch.testing.assert_close(thinking_advantages(scores, probs, "none"), torch.tensor([[[5 / 6, 2 / 3]]]))
    # V1 = [0, 0.5 · 2/3] = [0, 1/3] → A = [5/6, 1/3]
    torch.testing.assert_close(thinking_advantages(scores, probs, "v1only"), torch.tensor([[[5 / 6, 1 / 3]]]))
    # G = 1: V2 = 0, so v2only equals none
    torch.testing.assert_close(thinking_advantages(scores, probs, "v2only"), torch.tensor([[[5 / 6, 2 / 3]]]))


def test_reduces_to_grpo_without_std():
    # S = 1, A = 1, base prior, v2only: advantage = reward − group mean (no std division)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])  # [B=2, G=5]
    scores = rewards[:, :, None, None]  # [2, 5, 1, 1]
    # means: 3/5 and 1/5
    expected = rewards - torch.tensor([[0.6], [0.2]])
    think = thinking_advantages(scores, torch.tensor([1.0]), "v2only")
    summ = summary_advantages(scores, "grpo")
    torch.testing.assert_close(think[..., 0], expected)
    torch.testing.assert_close(summ[..., 0, 0], expected)
    # brpo with S = 1 is also V2 (s = 0 puts all weight on V2)
    torch.testing.assert_close(thinking_advantages(scores, torch.tensor([1.0]), "brpo")[..., 0], expected)


def test_single_rollout_single_budget_single_summary_gives_zero_summary_advantage():
    scores = torch.tensor([[[[1.0]]]])  # G = S = A = 1
    assert summary_advantages(scores, "brpo").item() == 0.0  # 1 − mean over G of 1
    # thinking: R = 1, G = 1 so V2 = 0 → A = 1 (no baseline available)
    assert thinking_advantages(scores, torch.tensor([1.0]), "brpo").item() == pytest.approx(1.0)


def test_summary_baseline_pools_budgets_that_share_a_prefix():
    # One thinking closed after 9 tokens, budgets 4, 8, 12 → cuts (4, 9, 9): budgets 1 and 2 share
    # one prefix, so their 2·2 summaries share one baseline, mean(1, 1, 0, 0) = 1/2.
    scores = torch.tensor([[[[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]])  # [1, 1, 3, 2]
    cuts = torch.tensor([[[4, 9, 9]]])  # [1, 1, 3]
    # budget 0 alone: mean 1/2 → [1/2, −1/2]; budgets 1, 2 pooled: [1/2, 1/2], [−1/2, −1/2]
    expected = torch.tensor([[[[0.5, -0.5], [0.5, 0.5], [-0.5, -0.5]]]])
    torch.testing.assert_close(summary_advantages(scores, "brpo", cuts), expected)
    # per budget only (the old rule) would give [0, 0] for budgets 1 and 2
    torch.testing.assert_close(summary_advantages(scores, "brpo")[0, 0, 1:], torch.zeros(2, 2))
    # A = 1 keeps the group baseline over the G thinkings, whatever the cuts
    one = torch.tensor([[[[1.0]], [[0.0]]]])  # [1, 2, 1, 1]
    torch.testing.assert_close(summary_advantages(one, "brpo", torch.tensor([[[3], [3]]])), torch.tensor([[[[0.5]], [[-0.5]]]]))


def test_summary_advantages_over_a_and_grpo_keeps_last_only():
    scores = torch.tensor([[[[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]]])  # [1, 1, 2, 4]
    # budget 0 mean 1/2 → [1/2, −1/2, −1/2, 1/2]; budget 1 mean 3/4 → [1/4, 1/4, 1/4, −3/4]
    brpo = summary_advantages(scores, "brpo")
    torch.testing.assert_close(brpo, torch.tensor([[[[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]]]]))
    grpo = summary_advantages(scores, "grpo")
    expected = torch.zeros(1, 1, 2, 4)
    expected[0, 0, 1, 3] = -0.75
    torch.testing.assert_close(grpo, expected)


@pytest.mark.parametrize("vr", ["brpo", "v1only", "v2only", "none"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 1, 4, 3), (2, 3, 1, 1), (1, 6, 8, 1)])
def test_thinking_matches_reference_on_random_inputs(vr, shape):
    gen = torch.Generator().manual_seed(derive_seed(vr, *shape))  # stable across processes
    scores = torch.randint(0, 2, shape, generator=gen).float()
    probs = torch.rand(shape[2], generator=gen) + 0.05
    got = thinking_advantages(scores, probs, vr)
    torch.testing.assert_close(got.double(), reference_thinking(scores, probs, vr), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["brpo", "grpo"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 4, 1), (1, 1, 1, 1)])
def test_summary_matches_reference_on_random_inputs(method, shape):
    gen = torch.Generator().manual_seed(7)
    scores = torch.rand(shape, generator=gen)
    torch.testing.assert_close(
        summary_advantages(scores, method).double(), reference_summary(scores, method), atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("method", ["brpo", "grpo"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 4, 1), (2, 2, 6, 3)])
def test_pooled_summary_matches_reference_on_random_inputs(method, shape):
    gen = torch.Generator().manual_seed(11)
    scores = torch.randint(0, 2, shape, generator=gen).float()
    # cuts of a thinking: min(b_j, L) for budgets 10, 20, …; equal past the thinking's end
    budgets = torch.arange(1, shape[2] + 1) * 10  # [S]
    lengths = torch.randint(1, 10 * shape[2] + 1, shape[:2], generator=gen)  # [B, G]
    cuts = torch.minimum(budgets, lengths[..., None])  # [B, G, S]
    got = summary_advantages(scores, method, cuts)
    torch.testing.assert_close(got.double(), reference_summary(scores, method, cuts), atol=1e-6, rtol=1e-5)


def test_many_budgets_do_not_overflow():
    scores = torch.ones(1, 2, 64, 1)
    adv = thinking_advantages(scores, torch.ones(64), "brpo")
    # all rewards 1: R[s] = (64 − s)/64, V1 = 1·tail = R, V2 = R → advantage 0 everywhere
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv, torch.zeros_like(adv), atol=1e-6, rtol=0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="variance_reduction"):
        thinking_advantages(torch.zeros(1, 1, 2, 1), torch.ones(2), "v3")
    with pytest.raises(ValueError, match="budget_probs"):
        thinking_advantages(torch.zeros(1, 1, 2, 1), torch.ones(3), "brpo")
    with pytest.raises(ValueError, match="scores"):
        summary_advantages(torch.zeros(2, 2), "brpo")
    with pytest.raises(ValueError, match="summary_method"):
        summary_advantages(torch.zeros(1, 1, 1, 1), "ppo")


def test_brpo_diagnostics_by_hand():
    from anytime_reasoner.algo.advantages import brpo_diagnostics

    # same case as the hand-computed BRPO test: R(g0) = [2/3, 1/3, 1/3], R(g1) = [1/3, 1/3, 1/3]
    scores = torch.tensor([[[[1.0], [0.0], [1.0]], [[0.0], [0.0], [1.0]]]])
    d = brpo_diagnostics(scores, torch.ones(3))
    # Var[R] over the two rollouts (population): s0 → ((1/6)² + (1/6)²)/2 = 1/36; s1, s2 → 0
    assert d["var_R"] == pytest.approx([1 / 36, 0.0, 0.0])
    # R − V: s0 → ±1/6 → 1/36; s1 → −1/9, 1/9 → 1/81; s2 → 4/27, 2/9 → mean 5/27, var (1/27)² = 1/729
    assert d["var_R_minus_V"] == pytest.approx([1 / 36, 1 / 81, 1 / 729])
    # ratios to Var[R]: defined only where Var[R] > 0
    assert d["ratio_R_minus_V"] == [pytest.approx(1.0), None, None]


def test_brpo_diagnostics_mask_budgets_past_the_end():
    from anytime_reasoner.algo.advantages import brpo_diagnostics

    # G = 3, S = 2, A = 1, uniform prior (1/2, 1/2). r(g0) = (1, 1), r(g1) = r(g2) = (0, 0):
    # R(g0) = (1, 1/2), R(g1) = R(g2) = (0, 0). g2 ended before b_0: its segment 1 is empty.
    scores = torch.tensor([[[[1.0], [1.0]], [[0.0], [0.0]], [[0.0], [0.0]]]])
    mask = torch.tensor([[[True, True], [True, True], [True, False]]])
    d = brpo_diagnostics(scores, torch.ones(2), mask)
    # s0, all three: R = 1, 0, 0, mean 1/3 → var (4/9 + 1/9 + 1/9)/3 = 2/9
    # s1, g0 and g1 only: R = 1/2, 0 → var 1/16 (unmasked it would be 1/18)
    assert d["var_R"] == pytest.approx([2 / 9, 1 / 16])
    # V1(s1) = r0 · 1/2 = 1/2, 0 → R − V1 = 0, 0 → ratio 0; at s0 V1 = 0 → ratio 1
    assert d["ratio_R_minus_V1"] == pytest.approx([1.0, 0.0])
    # V2 is constant within the one question: the ratio is 1
    assert d["ratio_R_minus_V2"] == pytest.approx([1.0, 1.0])
    # BRPO at s1: V = (V1 + V2)/2 with V2 = (1/2 + 0 + 0)/3 = 1/6: g0 → 1/2 − 1/3 = 1/6,
    # g1 → 0 − 1/12 = −1/12; mean 1/24, var (1/8)² = 1/64 → ratio (1/64)/(1/16) = 1/4
    assert d["ratio_R_minus_V"] == pytest.approx([1.0, 0.25])
    # a budget where fewer than two thinkings count has no variance
    lone = brpo_diagnostics(scores, torch.ones(2), torch.tensor([[[True, True], [True, False], [True, False]]]))
    assert lone["var_R"][1] is None and lone["ratio_R_minus_V"][1] is None


def test_std_norm_divides_by_the_groups_unbiased_std():
    # one question, G = 4 thinkings, S = A = 1 (GRPO): rewards 1, 0, 0, 1
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 4, 1, 1)
    # mean 0.5; unbiased std = sqrt(4 · 0.25 / 3) = sqrt(1/3) = 0.57735; ±0.5 / (0.57735 + 1e-6) = ±0.866024
    expected = [0.866024, -0.866024, -0.866024, 0.866024]
    think = thinking_advantages(scores, torch.tensor([1.0]), "v2only", advantage_norm="std")
    summ = summary_advantages(scores, "grpo", advantage_norm="std")
    assert think.flatten().tolist() == pytest.approx(expected, abs=1e-5)
    assert summ.flatten().tolist() == pytest.approx(expected, abs=1e-5)
    # Dr. GRPO (the default): the same advantages undivided, ±0.5
    assert thinking_advantages(scores, torch.tensor([1.0]), "v2only").flatten().tolist() == [0.5, -0.5, -0.5, 0.5]


def test_std_norm_of_a_uniform_group_or_a_group_of_one():
    uniform = torch.ones(1, 3, 1, 1)  # all right: advantage 0 / (0 + 1e-6) = 0
    assert thinking_advantages(uniform, torch.tensor([1.0]), "v2only", advantage_norm="std").abs().sum() == 0
    single = torch.tensor([[[[1.0, 0.0]]]])  # G = 1, A = 2: the summaries' group; A = 1 over G = 1 divides by 1
    assert summary_advantages(single, "brpo", advantage_norm="std").flatten().tolist() == pytest.approx(
        [0.5 / (0.5**0.5 + 1e-6), -0.5 / (0.5**0.5 + 1e-6)]  # unbiased std of (1, 0): sqrt(0.5)
    )
    lone = torch.tensor([[[[1.0]]]])  # G = 1, A = 1: mean 1, std taken as 1 → 0
    assert summary_advantages(lone, "brpo", advantage_norm="std").item() == 0.0


def test_std_norm_of_pooled_summaries_uses_the_pooled_std():
    # G = 1, S = 2 budgets with the same cut (the thinking ended before both), A = 2:
    # one pool of 4 summaries, scores 1, 0 | 1, 1: mean 0.75; unbiased var = (3 · 0.0625 + 0.5625) / 3 = 0.25, std 0.5
    scores = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # [1, 1, 2, 2]
    cuts = torch.tensor([[[30, 30]]])
    adv = summary_advantages(scores, "brpo", cuts, advantage_norm="std")
    # (1 − 0.75) / 0.5 = 0.5; (0 − 0.75) / 0.5 = −1.5
    assert adv.flatten().tolist() == pytest.approx([0.5, -1.5, 0.5, 0.5], abs=1e-5)


def test_unknown_advantage_norm_is_refused():
    with pytest.raises(ValueError, match="advantage_norm: unknown 'zscore'; allowed: none, std"):
        thinking_advantages(torch.ones(1, 2, 1, 1), torch.tensor([1.0]), advantage_norm="zscore")  # type: ignore[arg-type]
