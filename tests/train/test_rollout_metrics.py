"""Per-step rollout metrics, hand-computed on a two-thinking batch."""

import pytest

from anytime_reasoner.algo.budgets import BudgetPlan
from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.trainer import RolloutStats, rollout_metrics


def _summary(reward, n_tokens):
    return Summary(inserted_ids=[9], sampled_ids=list(range(n_tokens)), text="", reward=reward)


def test_rollout_metrics_by_hand():
    plan = BudgetPlan.build(4, budgets=[2, 4], prior=[1.0, 3.0])  # P = [1/4, 3/4]
    closed = Thinking([1], [5, 6, 7], True, [2, 3], [[_summary(0.0, 2)], [_summary(1.0, 4)]])
    cut = Thinking([1], [5, 6, 7, 8], False, [2, 4], [[_summary(1.0, 2)], [_summary(1.0, 2)]])
    batch = RolloutBatch(budgets=plan.budgets, thinkings=[[closed, cut]])
    m = rollout_metrics(RolloutStats.of(batch, batch.scores()), plan)
    # budget 1: (0 + 1)/2 = 0.5; budget 2: (1 + 1)/2 = 1.0
    assert m["reward_per_budget"] == [0.5, 1.0]
    # anytime = 1/4 · 0.5 + 3/4 · 1.0 = 0.875
    assert m["anytime_score"] == pytest.approx(0.875)
    assert m["final_reward"] == 1.0
    assert m["thinking_length"] == 3.5  # (3 + 4)/2
    assert m["closed_share"] == 0.5
    assert m["summary_length"] == 2.5  # (2 + 4 + 2 + 2)/4
