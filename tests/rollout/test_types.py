"""The rollout tree's length views: which cuts closed within their budget, which thinkings ran out."""

import torch

from anytime_reasoner.rollout.types import RolloutBatch, Thinking


def _thinking(length: int, closed: bool, finish: str) -> Thinking:
    return Thinking(prompt_ids=[1], thinking_ids=[5] * length, closed=closed, cuts=[], finish_reason=finish)


def test_closed_within_and_truncated():
    # budgets (4, 8): a thinking closed at 3, one closed at 6, one cut at the cap 8, one ended by EOS at 5
    row = [_thinking(3, True, "stop"), _thinking(6, True, "stop"), _thinking(8, False, "length"), _thinking(5, False, "stop")]
    batch = RolloutBatch(budgets=(4, 8), thinkings=[row])
    assert batch.closed_within().tolist() == [[[True, True], [False, True], [False, False], [False, False]]]
    # only the one that hit the cap without closing is truncated (EOS ended the fourth: not overlong)
    assert torch.equal(batch.truncated(), torch.tensor([[False, False, True, False]]))
