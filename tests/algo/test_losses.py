"""PPO clipped loss: hand-computed values and the micro-batch normalization identity."""

import math

import pytest
import torch

from anytime_reasoner.algo.losses import loss_normalizer, ppo_policy_loss


def test_clipped_surrogate_by_hand():
    # ratios e^{0.5}≈1.6487 (clipped to 1.2 for A>0), e^{-0.5}≈0.6065 (A<0: clipped to 0.8 → max picks 0.8),
    # ratio 1 (unclipped), and a masked token that must not count.
    old = torch.zeros(1, 4)
    new = torch.tensor([[0.5, -0.5, 0.0, 3.0]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss, m = ppo_policy_loss(new, old, adv, mask, normalizer=3.0, clip_eps=0.2)
    # token 0: max(−1·1.6487, −1·1.2) = −1.2
    # token 1: max(+1·0.6065, +1·0.8) = 0.8
    # token 2: max(−2·1, −2·1) = −2
    # sum = −2.4 → / 3 = −0.8
    assert loss.item() == pytest.approx(-0.8, abs=1e-6)
    # tokens 0 and 1 clipped → 2/3
    assert m["clip_frac"].item() == pytest.approx(2 / 3)
    # approx_kl = mean(old − new) = (−0.5 + 0.5 + 0)/3 = 0
    assert m["approx_kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert m["ratio_min"].item() == pytest.approx(math.exp(-0.5))
    assert m["ratio_max"].item() == pytest.approx(math.exp(0.5))
    assert m["n_tokens"].item() == 3
    assert not any(v.requires_grad for v in m.values())


def test_gradient_at_ratio_one_is_minus_advantage_over_normalizer():
    new = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, _ = ppo_policy_loss(new, torch.zeros(2, 3), adv, mask, normalizer=10.0)
    loss.backward()
    # d/dlogp (−A·e^{logp−old}) at ratio 1 = −A; masked token has zero gradient
    expected = -adv * mask / 10.0
    torch.testing.assert_close(new.grad, expected)


def test_normalizers():
    mask = torch.tensor([[True, True, False, False], [True, False, False, False], [False] * 4])
    # constant: 3 rows × 100 = 300; token-mean: 3 trainable tokens
    assert loss_normalizer(mask, "constant", max_response_len=100) == 300.0
    assert loss_normalizer(mask, "token-mean") == 3.0
    with pytest.raises(ValueError, match="max_response_len"):
        loss_normalizer(mask, "constant")
    with pytest.raises(ValueError, match="loss_agg"):
        loss_normalizer(mask, "seq-mean")


def test_split_micro_batches_sum_to_the_full_loss():
    gen = torch.Generator().manual_seed(0)
    new = torch.randn(4, 6, generator=gen)
    old = new + 0.1 * torch.randn(4, 6, generator=gen)
    adv = torch.randn(4, 6, generator=gen)
    mask = torch.rand(4, 6, generator=gen) > 0.3
    norm = loss_normalizer(mask, "token-mean")
    full, _ = ppo_policy_loss(new, old, adv, mask, normalizer=norm)
    parts = [
        ppo_policy_loss(new[i : i + 1], old[i : i + 1], adv[i : i + 1], mask[i : i + 1], normalizer=norm)[0] for i in range(4)
    ]
    torch.testing.assert_close(sum(parts), full)


def test_clip_higher_widens_only_the_upper_range():
    # ratio e^{0.22} = 1.2461 with A = 1: symmetric ε = 0.2 clips it to 1.2; DAPO's ε_high = 0.28 does not
    # ratio e^{-0.3} = 0.7408 with A = −1: the lower range stays 1 − 0.2 = 0.8 either way
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.22, -0.3]])
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    symmetric, _ = ppo_policy_loss(new, old, adv, mask, normalizer=1.0, clip_eps=0.2)
    higher, m = ppo_policy_loss(new, old, adv, mask, normalizer=1.0, clip_eps=0.2, clip_eps_high=0.28)
    # symmetric: max(−1.2461, −1.2) + max(0.7408, 0.8) = −1.2 + 0.8 = −0.4
    assert symmetric.item() == pytest.approx(-0.4, abs=1e-6)
    # clip-higher: max(−1.2461, −1.28) + 0.8 = −1.2461 + 0.8 = −0.4461
    assert higher.item() == pytest.approx(-math.exp(0.22) + 0.8, abs=1e-6)
    assert m["clip_frac"].item() == pytest.approx(0.5)  # only the lower-clipped token
