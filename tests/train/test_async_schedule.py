"""The fixed lag of asynchronous rollouts, by hand, and the config rules around it."""

from __future__ import annotations

import pytest
import torch

from anytime_reasoner.config import PPOConfig, TrainConfig, build_config
from anytime_reasoner.config.base import ConfigError
from anytime_reasoner.train.async_rollouts import LagSchedule
from anytime_reasoner.train.rollout_worker import own_gpu
from anytime_reasoner.train.update import behaviour_weights


def test_lag_two_by_hand():
    # k = 2, 6 steps: step t samples with policy max(0, t − 1 − 2): steps 1-3 → 0, 4 → 1, 5 → 2, 6 → 3
    lag = LagSchedule(k=2, last_step=6)
    assert [lag.version_of(t) for t in range(1, 7)] == [0, 0, 0, 1, 2, 3]
    assert lag.steps_of(0, after=0) == [1, 2, 3]  # the first policy samples k + 1 steps
    assert [lag.steps_of(v, after=0) for v in (1, 2, 3, 4)] == [[4], [5], [6], []]  # policy 4 would sample step 7 > 6
    assert lag.steps_of(0, after=2) == [3]  # resumed after step 2: steps 1 and 2 are trained
    # a checkpoint after step c holds the policies c − 2 … c − 1 that steps c + 1 … c + 2 sample with
    assert list(lag.history(3)) == [1, 2] and list(lag.history(1)) == [0] and list(lag.history(0)) == []


def test_lag_zero_is_the_synchronous_loop():
    lag = LagSchedule(k=0, last_step=4)
    assert [lag.version_of(t) for t in range(1, 5)] == [0, 1, 2, 3]  # step t: the policy after step t − 1
    assert [lag.steps_of(v, after=0) for v in range(4)] == [[1], [2], [3], [4]]
    assert list(lag.history(3)) == []


def _config(*overrides: str) -> TrainConfig:
    return build_config(TrainConfig, preset="ar-uniform", overrides=list(overrides))


def test_async_turns_truncated_importance_sampling_on_unless_a_correction_is_chosen():
    assert _config().ppo.tis_cap == 0.0
    assert _config("trainer.async_level=1").ppo.tis_cap == 2.0  # prime-rl's, verl's and TRL's default cap
    assert _config("trainer.async_level=1", "ppo.tis_cap=5").ppo.tis_cap == 5.0
    decoupled = _config("trainer.async_level=2", "ppo.decoupled=true", "ppo.behaviour_weight_cap=5")
    assert decoupled.ppo.tis_cap == 0.0 and decoupled.ppo.decoupled
    assert _config("trainer.async_level=1").trainer.placement() == "process"
    assert _config().trainer.placement() == "inline"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.async_level=1", "trainer.rollout_placement=inline"], "trainer.rollout_placement: inline"),
        (["ppo.decoupled=true", "ppo.tis_cap=2"], "ppo.decoupled: excludes ppo.tis_cap"),
        (["ppo.behaviour_weight_cap=5"], "ppo.behaviour_weight_cap: applies to ppo.decoupled=true only"),
        (["trainer.async_level=9"], "trainer.async_level"),
    ],
)
def test_async_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(*overrides)


def test_behaviour_weights_follow_the_configured_correction():
    old = torch.tensor([[0.0, 0.0]])
    rollout = torch.log(torch.tensor([[0.5, 0.1]]))  # ratios π_old / π_rollout = [2, 10]
    assert behaviour_weights(old, rollout, PPOConfig()) is None
    torch.testing.assert_close(behaviour_weights(old, rollout, PPOConfig(tis_cap=3.0)), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(
        behaviour_weights(old, rollout, PPOConfig(decoupled=True, behaviour_weight_cap=5.0)), torch.tensor([[2.0, 0.0]])
    )


def test_a_worker_on_cuda_n_sees_only_that_gpu():
    env = {"CUDA_VISIBLE_DEVICES": "2,5,7"}
    assert own_gpu("cuda:1", env) == "cuda" and env["CUDA_VISIBLE_DEVICES"] == "5"  # the 2nd visible one
    env = {}
    assert own_gpu("cuda:3", env) == "cuda" and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert own_gpu("cpu", env) == "cpu" and own_gpu("cuda", {}) == "cuda"
