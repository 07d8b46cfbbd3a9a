"""Rollout/trainer log-prob agreement metrics and truncated importance sampling, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from anytime_reasoner.algo.losses import ppo_policy_loss
from anytime_reasoner.algo.off_policy import (
    corrected_share,
    decoupled_weights,
    mismatch_metrics,
    mismatch_sums,
    tis_weights,
)

NAN = float("nan")
OLD = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])  # [1, 4]
ROLLOUT = torch.tensor([[-1.0, -2.5, NAN, -1.0]])  # token 2: no engine log-prob
MASK = torch.tensor([[True, True, True, False]])  # token 3: not trainable


def test_mismatch_metrics_by_hand():
    # counted tokens 0 and 1: Δ = old − rollout = [0, 0.5]; r = exp(Δ) = [1, e^0.5 = 1.6487]
    metrics = mismatch_metrics(mismatch_sums(OLD, ROLLOUT, MASK))
    r = math.exp(0.5)
    assert metrics["rollout_logprob_tokens"] == 2
    assert metrics["rollout_logprob_diff_mean"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert metrics["rollout_logprob_diff_max"] == pytest.approx(0.5)
    assert metrics["rollout_ratio_mean"] == pytest.approx((1 + r) / 2)  # 1.3244
    assert metrics["rollout_ratio_std"] == pytest.approx((r - 1) / 2, rel=1e-5)  # two values: half their gap, 0.3244
    assert (metrics["rollout_ratio_min"], metrics["rollout_ratio_max"]) == pytest.approx((1.0, r))


def test_no_engine_logprobs_no_metrics():
    assert mismatch_metrics(mismatch_sums(OLD, torch.full_like(OLD, NAN), MASK)) == {}


def test_tis_weights_truncate_and_ignore_missing():
    # r = [1, 1.6487, -, exp(-2) = 0.1353]; cap 1.5 → [1, 1.5, 1 (no log-prob), 0.1353]
    weights = tis_weights(OLD, ROLLOUT, cap=1.5)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 1.5, 1.0, math.exp(-2.0)]]))
    with pytest.raises(ValueError, match="tis_cap"):
        tis_weights(OLD, ROLLOUT, cap=0.0)


def test_token_weights_scale_each_token_loss():
    # ratio 1 everywhere (new = old): token loss = −A; weights [1, 1.5, 1]; mask drops token 3
    advantages = torch.tensor([[1.0, 2.0, -1.0, 5.0]])
    weights = torch.tensor([[1.0, 1.5, 1.0, 9.0]])
    loss, _ = ppo_policy_loss(OLD, OLD, advantages, MASK, normalizer=2.0, token_weights=weights)
    # (−1·1 − 2·1.5 + 1·1) / 2 = −1.5
    assert float(loss) == pytest.approx(-1.5)


def test_decoupled_weights_keep_the_ratio_and_drop_tokens_above_the_cap():
    # AReaL: w = π_prox / π_behav = r = [1, 1.6487, -, 0.1353], untruncated; cap 1.5 drops token 1 (w = 0)
    r = math.exp(0.5)
    torch.testing.assert_close(decoupled_weights(OLD, ROLLOUT, None), torch.tensor([[1.0, r, 1.0, math.exp(-2.0)]]))
    torch.testing.assert_close(decoupled_weights(OLD, ROLLOUT, 1.5), torch.tensor([[1.0, 0.0, 1.0, math.exp(-2.0)]]))


def test_corrected_share_counts_truncated_or_dropped_tokens_with_a_log_prob():
    # tokens with an engine log-prob that are trainable: 0 and 1; only token 1's ratio (1.6487) exceeds 1.5
    assert corrected_share(OLD, ROLLOUT, MASK, tis_weights(OLD, ROLLOUT, cap=1.5)) == (1.0, 2.0)
    assert corrected_share(OLD, ROLLOUT, MASK, decoupled_weights(OLD, ROLLOUT, 1.5)) == (1.0, 2.0)
    assert corrected_share(OLD, ROLLOUT, MASK, tis_weights(OLD, ROLLOUT, cap=2.0)) == (0.0, 2.0)  # nothing above 2
