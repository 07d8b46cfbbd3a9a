"""The runtime of one process (no process group): how a rank's share of the questions is dealt,
and reductions that are the identity in one process (the 2-process runs: test_distributed.py)."""

import torch

from anytime_reasoner.train.runtime import Runtime


def test_runtime_deals_questions_strided():
    rank1 = Runtime(device=torch.device("cpu"), rank=1, world_size=2)
    assert rank1.shard(["q0", "q1", "q2", "q3", "q4"]) == ["q1", "q3"]
    assert rank1.global_index(torch.tensor([0, 1])).tolist() == [1, 3]  # 1 + 2·0, 1 + 2·1
    assert Runtime(device=torch.device("cpu")).all_reduce([2.0, 3.0]) == [2.0, 3.0]
