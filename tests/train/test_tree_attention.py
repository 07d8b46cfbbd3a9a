"""Tree attention (train.tree_attention): the same log-probs and gradients as the dense tree mask."""

from __future__ import annotations

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.logprobs import packed_logprobs, uses_tree_attention
from anytime_reasoner.train.packing import (
    RowPlacement,
    first_fit_bins,
    merge_rows,
    pack_rollouts,
    prompt_groups,
)
from anytime_reasoner.train.tree_attention import IMPLEMENTATION, TreeLayout, buckets, register

BUDGETS = (4, 8, 12)
LENGTHS = [[2, 4, 7], [8, 10, 12]]  # before, at and between budgets; the last never closes


def _pair(arch: str, seed: int):
    """The same random weights under sdpa (dense tree mask) and under tree attention."""
    register()
    dense = tiny_model(arch, "sdpa", seed=seed)
    tree = tiny_model(arch, IMPLEMENTATION, seed=seed)
    tree.load_state_dict(dense.state_dict())
    return dense, tree


def _merged(packed):
    sizes = packed.lengths.tolist()
    return merge_rows(packed, RowPlacement.of(packed.lengths, first_fit_bins(sizes, 2 * max(sizes))))


def _summary(inserted, sampled):
    return Summary(inserted_ids=inserted, sampled_ids=sampled, text="", reward=0.0)


def test_layout_of_the_hand_batch():
    """tests/rollout/test_packing.py's hand batch: row 0 = prompt 3 + thinking 3, blocks of 4 and 2
    tokens seeing 5 and 6 trunk tokens; row 1 = prompt 2 + thinking 1, blocks of 2 and 3 seeing 3."""
    t0 = Thinking([11, 12, 13], [21, 22, 23], True, [2, 3], [[_summary([91, 92], [31, 32])], [_summary([93], [33])]])
    t1 = Thinking([11, 12], [24], True, [1, 1], [[_summary([94], [34])], [_summary([94], [35, 36])]])
    batch = RolloutBatch(budgets=(2, 4), thinkings=[[t0, t1]])
    p = pack_rollouts(batch, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 1))
    layout = TreeLayout.of(p)
    # row 0: trunk 0-5 (6 tokens); row 1: trunk 0-2 (3 tokens)
    assert len(layout.trunks) == len(layout.blocks) == 1  # under BUCKET_LEAST segments: one bucket each
    trunks, blocks = layout.trunks[0], layout.blocks[0]
    assert trunks.rows.tolist() == [0, 1] and trunks.valid.sum(1).tolist() == [6, 3]
    assert blocks.rows.tolist() == [0, 0, 1, 1]
    assert blocks.valid.sum(1).tolist() == [4, 2, 2, 3]  # block lengths: inserted + sampled
    # prefix part of the mask: row 0 sees 5 then 6 trunk tokens, row 1 sees 3 and 3 (P = 6)
    assert blocks.mask[:, 0, 0, :6].sum(1).tolist() == [5, 6, 3, 3]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("several", [False, True])
def test_tree_attention_equals_the_dense_mask(arch, several):
    dense, tree = _pair(arch, seed=7)
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=6)
    packed = pack_rollouts(batch, *random_advantages(batch))
    rows = _merged(packed) if several else packed
    assert uses_tree_attention(tree) and not uses_tree_attention(dense)
    with torch.no_grad():
        by_mask = packed_logprobs(dense, rows, tokens="all")  # [N, T]
        by_tree = packed_logprobs(tree, rows, tokens="all")  # [N, T]
    torch.testing.assert_close(by_tree, by_mask, atol=1e-5, rtol=0)


def test_tree_attention_gradient_equals_the_dense_mask():
    dense, tree = _pair("qwen2", seed=8)
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=7)
    rows = _merged(pack_rollouts(batch, *random_advantages(batch)))
    weights = torch.randn(rows.input_ids.shape, generator=torch.Generator().manual_seed(0))  # [N, T]
    for model in (dense, tree):
        (packed_logprobs(model, rows) * weights).sum().backward()
    for (name, a), b in zip(dense.named_parameters(), tree.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_buckets_of_similar_lengths():
    """Lengths 10, 9, …, 1 with ratio 0.8 and at least 3 per bucket: 10, 9, 8 (7 < 0.8 · 10 = 8),
    then 7, 6, 5 (5 < 0.8 · 7 = 5.6), then 4, 3, 2, 1 (4 < 0.8 · 5 = 4, but only 1 would be left
    after 4, 3, 2); each bucket in batch order."""
    lengths = torch.tensor([3, 10, 1, 7, 9, 4, 8, 2, 6, 5])
    got = [lengths[i].tolist() for i in buckets(lengths, ratio=0.8, least=3)]
    assert got == [[10, 9, 8], [7, 6, 5], [3, 1, 4, 2]]
    assert buckets(torch.tensor([], dtype=torch.long)) == []


def test_tree_attention_in_several_buckets_equals_the_dense_mask():
    """Thinkings of 1 to 24 tokens (24 trunks, 72 summary blocks): several buckets of trunks and of
    blocks, the same log-probs and gradients as the dense mask."""
    dense, tree = _pair("qwen2", seed=11)
    batch = make_rollouts([list(range(1, 13)), list(range(13, 25))], (6, 12, 24), n_summary=1, seed=3)
    rows = _merged(pack_rollouts(batch, *random_advantages(batch)))
    layout = TreeLayout.of(rows)
    assert len(layout.trunks) > 1 and len(layout.blocks) > 1
    weights = torch.randn(rows.input_ids.shape, generator=torch.Generator().manual_seed(0))  # [N, T]
    by_mask, by_tree = packed_logprobs(dense, rows, tokens="all"), packed_logprobs(tree, rows, tokens="all")  # [N, T]
    torch.testing.assert_close(by_tree, by_mask, atol=1e-5, rtol=0)
    ((by_mask * weights).sum() + (by_tree * weights).sum()).backward()
    for (name, a), b in zip(dense.named_parameters(), tree.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_without_a_layout_it_is_sdpa():
    """Generation and plain rows: the tree implementation falls back to sdpa (same logits, same mask)."""
    dense, tree = _pair("qwen2", seed=9)
    ids = torch.randint(3, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    with torch.no_grad():
        torch.testing.assert_close(tree(ids, attention_mask=mask).logits, dense(ids, attention_mask=mask).logits)
        out_tree = tree.generate(ids[:1], max_new_tokens=5, do_sample=False)
        out_dense = dense.generate(ids[:1], max_new_tokens=5, do_sample=False)
    assert torch.equal(out_tree, out_dense)


def test_attention_setting_picks_the_path():
    """tree/auto use tree attention on a tree model; dense and flex do not; tree on an sdpa model is an error."""
    dense, tree = _pair("qwen2", seed=10)
    batch = make_rollouts([[3, 7]], BUDGETS, n_summary=1, seed=2)
    packed = pack_rollouts(batch, *random_advantages(batch))
    assert uses_tree_attention(tree, "auto") and uses_tree_attention(tree, "tree")
    assert not uses_tree_attention(tree, "dense") and not uses_tree_attention(tree, "flex")
    with pytest.raises(ValueError, match="model.attention: 'tree' needs"):
        packed_logprobs(dense, packed, attention="tree")


def _shared(packed):
    """All rows into one row, each prompt once (its first tree's; the second question's lender is
    not at the start of the row)."""
    sizes, groups = packed.lengths.tolist(), prompt_groups(packed)
    placement = RowPlacement.sharing(packed, first_fit_bins(sizes, sum(sizes), groups, packed.prompt_lengths.tolist()), groups)
    return merge_rows(packed, placement), placement


@pytest.mark.parametrize("n_summary", [0, 2])
def test_shared_prompts_give_the_unshared_logprobs_and_gradients(n_summary):
    """Two questions of 3 thinkings each (GRPO rows without blocks; AR rows with them), packed with
    the prompt once a question: the log-probs of every placed token and the gradients equal those
    of one tree per row, under the dense mask and under tree attention."""
    dense, tree = _pair("qwen2", seed=12)
    batch = make_rollouts([[3, 8, 12], [1, 6, 10]], BUDGETS, n_summary=n_summary, seed=5, same_prompt=True)
    packed = pack_rollouts(batch, *random_advantages(batch))
    shared, placement = _shared(packed)
    assert shared.n_rows == 1 and shared.shares_prompts
    prompts = packed.prompt_lengths.tolist()
    assert int(shared.lengths.sum()) == int(packed.lengths.sum()) - 2 * prompts[0] - 2 * prompts[3]  # 2 of 3 per question
    weights = torch.randn(packed.input_ids.shape, generator=torch.Generator().manual_seed(1))  # [N, T]
    placed = placement.unplace(torch.ones_like(shared.input_ids), packed.width).bool()  # [N, T] tokens that run
    own = packed_logprobs(dense, packed, tokens="all")  # [N, T] one tree per row
    (own * weights * placed).sum().backward()
    reference = [p.grad.clone() for p in dense.parameters()]
    for model in (dense, tree):
        model.zero_grad()
        by_shared = placement.unplace(packed_logprobs(model, shared, tokens="all"), packed.width)  # [N, T]
        torch.testing.assert_close(by_shared[placed], own.detach()[placed], atol=1e-5, rtol=0)
        (by_shared * weights).sum().backward()
        for (name, p), want in zip(model.named_parameters(), reference, strict=True):
            torch.testing.assert_close(p.grad, want, atol=1e-5, rtol=1e-4, msg=name)
