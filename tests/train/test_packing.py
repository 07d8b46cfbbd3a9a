"""Tree packing (docs/ALGORITHM.md §7): row layout, advantages, trainable mask, attention rule — by hand."""

from __future__ import annotations

import pytest
import torch

from anytime_reasoner.rollout.types import RolloutBatch, Summary, Thinking
from anytime_reasoner.train.masks import allowed_attention, dense_attention_mask, tree_mask_mod
from anytime_reasoner.train.packing import (
    RowPlacement,
    first_fit_bins,
    max_response_len,
    merge_rows,
    pack_rollouts,
    packed_response_len_bound,
    prompt_groups,
    shared_prompt_plan,
    unpack_rollouts,
)


def _summary(inserted, sampled):
    return Summary(inserted_ids=inserted, sampled_ids=sampled, text="", reward=0.0)


def hand_batch() -> tuple[RolloutBatch, torch.Tensor, torch.Tensor]:
    """B = 1, G = 2, budgets (2, 4), A = 1.

    Thinking 0: prompt [11 12 13], thinking [21 22 23] (L = 3): cut at b1 = 2, and at b2 = 4 the
    thinking has closed (L = 3 ≤ 4) → cuts [2, 3].
    Thinking 1: prompt [11 12], thinking [24] (L = 1, ends before b1) → cuts [1, 1].
    """
    t0 = Thinking(
        prompt_ids=[11, 12, 13],
        thinking_ids=[21, 22, 23],
        closed=True,
        cuts=[2, 3],
        summaries=[[_summary([91, 92], [31, 32])], [_summary([93], [33])]],
    )
    t1 = Thinking(
        prompt_ids=[11, 12],
        thinking_ids=[24],
        closed=True,
        cuts=[1, 1],
        summaries=[[_summary([94], [34])], [_summary([94], [35, 36])]],
    )
    batch = RolloutBatch(budgets=(2, 4), thinkings=[[t0, t1]])
    think_adv = torch.tensor([[[0.5, -0.25], [0.75, 0.1]]])  # [1, 2, 2]
    summ_adv = torch.tensor([[[[1.0], [-1.0]], [[0.2], [-0.3]]]])  # [1, 2, 2, 1]
    return batch, think_adv, summ_adv


def test_layout_by_hand():
    batch, think_adv, summ_adv = hand_batch()
    p = pack_rollouts(batch, think_adv, summ_adv, pad_token_id=0)
    F, T = False, True
    # Row 0: idx 0-2 prompt, 3-5 thinking, 6-9 block 1 (cut 2 → sees 3 + 2 = 5 trunk tokens),
    # 10-11 block 2 (cut 3 → sees 6).
    # Row 1: idx 0-1 prompt, 2 thinking, 3-4 block 1 (sees 2 + 1 = 3), 5-7 block 2 (sees 3), 8-11 padding.
    assert p.input_ids.tolist() == [
        [11, 12, 13, 21, 22, 23, 91, 92, 31, 32, 93, 33],
        [11, 12, 24, 94, 34, 94, 35, 36, 0, 0, 0, 0],
    ]
    # Blocks restart at |prompt| + cut: row 0 → 5 and 6; row 1 → 3 and 3.
    assert p.position_ids.tolist() == [
        [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 6, 7],
        [0, 1, 2, 3, 4, 3, 4, 5, 0, 0, 0, 0],
    ]
    assert p.segment_ids.tolist() == [
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2],
        [0, 0, 0, 1, 1, 2, 2, 2, -1, -1, -1, -1],
    ]
    assert p.visible_trunk.tolist() == [
        [0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 6, 6],
        [0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0],
    ]
    # First token of a block is predicted by trunk token |prompt| + cut - 1: row 0 → 4, 5; row 1 → 2, 2.
    assert p.prev_index.tolist() == [
        [-1, 0, 1, 2, 3, 4, 4, 6, 7, 8, 5, 10],
        [-1, 0, 1, 2, 3, 2, 5, 6, -1, -1, -1, -1],
    ]
    assert p.trainable_mask.tolist() == [
        [F, F, F, T, T, T, F, F, T, T, F, T],
        [F, F, T, F, T, F, T, T, F, F, F, F],
    ]
    # Thinking token p is in segment s with b_{s-1} < p + 1 <= b_s: row 0 p = 0, 1 → s 0 (0.5),
    # p = 2 → s 1 (-0.25); row 1 p = 0 → s 0 (0.75). Summaries: their own value.
    assert p.advantages.tolist() == [
        [0, 0, 0, 0.5, 0.5, -0.25, 0, 0, 1.0, 1.0, 0, -1.0],
        [0, 0, 0.75, 0, pytest.approx(0.2), 0, pytest.approx(-0.3), pytest.approx(-0.3), 0, 0, 0, 0],
    ]
    assert p.lengths.tolist() == [12, 8]
    assert p.prompt_lengths.tolist() == [3, 2]
    assert p.response_lengths.tolist() == [9, 6]
    assert p.question_index.tolist() == [0, 0]
    assert p.rollout_index.tolist() == [0, 1]
    assert not p.is_causal and p.n_rollouts == 2


def test_attention_rule_by_hand():
    batch, think_adv, summ_adv = hand_batch()
    p = pack_rollouts(batch, think_adv, summ_adv)
    allowed = allowed_attention(p.segment_ids, p.visible_trunk, p.doc_ids)  # [2, 12, 12]
    seen = lambda n, q: allowed[n, q].nonzero().flatten().tolist()  # noqa: E731
    assert seen(0, 5) == [0, 1, 2, 3, 4, 5]  # trunk: causal
    assert seen(0, 8) == [0, 1, 2, 3, 4, 6, 7, 8]  # block 1: trunk[:5] + own block; not 23 at idx 5
    assert seen(0, 11) == [0, 1, 2, 3, 4, 5, 10, 11]  # block 2: trunk[:6] + own block; not block 1
    assert seen(1, 7) == [0, 1, 2, 5, 6, 7]
    assert seen(1, 9) == [8, 9]  # padding sees padding only (no empty softmax row)
    mask = dense_attention_mask(p)  # [2, 1, 12, 12]
    assert mask.shape == (2, 1, 12, 12)
    assert mask[0, 0, 8, 4] == 0 and mask[0, 0, 8, 5] == torch.finfo(torch.float32).min


@pytest.mark.parametrize("shared", [False, True])
def test_mask_mod_matches_dense_rule(shared):
    p = shared_hand_rows() if shared else pack_rollouts(*hand_batch())
    N, T = p.segment_ids.shape
    b = torch.arange(N)[:, None, None]
    q = torch.arange(T)[None, :, None]
    k = torch.arange(T)[None, None, :]
    spans = (p.shared_start, p.shared_end)
    by_mask_mod = tree_mask_mod(p.segment_ids, p.visible_trunk, p.doc_ids, *spans)(b, 0, q, k)  # [N, T, T]
    assert torch.equal(by_mask_mod, allowed_attention(p.segment_ids, p.visible_trunk, p.doc_ids, spans))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_matches_dense_mask_on_cpu():
    """FlexAttention (eager, forward only on CPU) with the BlockMask == sdpa with the dense mask."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from anytime_reasoner.train.masks import flex_block_mask

    batch, think_adv, summ_adv = hand_batch()
    p = pack_rollouts(batch, think_adv, summ_adv)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, p.width, 8, generator=gen) for _ in range(3))  # [N, heads, T, d]
    block_mask = flex_block_mask(p, compile_mask=False)
    by_flex = flex.flex_attention(q, k, v, block_mask=block_mask)
    by_dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense_attention_mask(p))
    torch.testing.assert_close(by_flex, by_dense, atol=1e-5, rtol=1e-5)
    # Block level: with 4-token blocks, a block is kept iff one of its 16 entries is allowed.
    small = flex_block_mask(p, block_size=4, compile_mask=False).to_dense()[:, 0]  # [N, 3, 3]
    allowed = allowed_attention(p.segment_ids, p.visible_trunk, p.doc_ids)  # [N, 12, 12]
    assert torch.equal(small.bool(), allowed.view(2, 3, 4, 3, 4).any(dim=4).any(dim=2))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_reads_shared_prompts_on_cpu():
    """The BlockMask of rows that share a prompt (the shared span across trees) == the dense mask."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from anytime_reasoner.train.masks import flex_block_mask

    m = shared_hand_rows()
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, m.width, 8, generator=gen) for _ in range(3))  # [1, heads, 22, d]
    by_flex = flex.flex_attention(q, k, v, block_mask=flex_block_mask(m, compile_mask=False))
    by_dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense_attention_mask(m))
    torch.testing.assert_close(by_flex, by_dense, atol=1e-5, rtol=1e-5)


def test_unpacked_rows_by_hand():
    batch, think_adv, summ_adv = hand_batch()
    u = unpack_rollouts(batch, think_adv, summ_adv, pad_token_id=0)
    # Per thinking: the trunk row, then one row per (s, a): prompt + thinking[:cut] + inserted + sampled.
    assert u.n_rows == 6 and u.is_causal and u.n_rollouts == 2
    assert u.input_ids[1, : u.lengths[1]].tolist() == [11, 12, 13, 21, 22, 91, 92, 31, 32]
    assert u.input_ids[2, : u.lengths[2]].tolist() == [11, 12, 13, 21, 22, 23, 93, 33]
    assert u.input_ids[5, : u.lengths[5]].tolist() == [11, 12, 24, 94, 35, 36]
    assert u.trainable_mask[1, : u.lengths[1]].tolist() == [False] * 7 + [True] * 2
    assert u.rollout_index.tolist() == [0, 0, 0, 1, 1, 1]
    # Same trainable tokens and advantages, in the same order, as the packed rows.
    p = pack_rollouts(batch, think_adv, summ_adv)
    assert torch.equal(u.input_ids[u.trainable_mask], p.input_ids[p.trainable_mask])
    assert torch.equal(u.advantages[u.trainable_mask], p.advantages[p.trainable_mask])


def test_select_trims_padding():
    batch, think_adv, summ_adv = hand_batch()
    p = pack_rollouts(batch, think_adv, summ_adv)
    row1 = p.select([1])
    assert row1.width == 8 and row1.input_ids.tolist() == [[11, 12, 24, 94, 34, 94, 35, 36]]


def test_rejects_bad_shapes():
    batch, think_adv, summ_adv = hand_batch()
    with pytest.raises(ValueError, match="thinking_advantages"):
        pack_rollouts(batch, think_adv[..., :1], summ_adv)
    batch.thinkings[0][0].thinking_ids = [1, 2, 3, 4, 5]  # 5 > b_max = 4
    with pytest.raises(ValueError, match="exceeds the largest budget"):
        pack_rollouts(batch, think_adv, summ_adv)


def test_response_len_bound():
    # 8000 + S·A·(inserted + cap) = 8000 + 4·4·(10 + 118) = 10048
    assert packed_response_len_bound(8000, 4, 4, 10, 118) == 10048

    class Codec:  # one token per character
        def encode(self, text):
            return list(range(len(text)))

    from anytime_reasoner.config import RolloutConfig

    cfg = RolloutConfig(
        max_budget=100, n_budget_support=2, n_summary=3, summary_max_tokens=5, cut_marker="ab", answer_delimiter="xyz"
    )
    # inserted = 2 (marker) + 1 (think-end) + 3 (delimiter) = 6 → 100 + 2·3·(6 + 5) = 166
    assert max_response_len(cfg, Codec()) == 166


def test_engine_logprobs_land_on_their_sampled_tokens():
    """Thinking 0 has engine log-probs (−0.1, −0.2, −0.3) and its summaries (−1.1, −1.2), (−1.3);
    thinking 1 has none: its tokens, prompts, inserted text and padding are NaN."""
    batch, think_adv, summ_adv = hand_batch()
    t0 = batch.thinkings[0][0]
    t0.thinking_logprobs = [-0.1, -0.2, -0.3]
    t0.summaries[0][0].sampled_logprobs = [-1.1, -1.2]
    t0.summaries[1][0].sampled_logprobs = [-1.3]
    p = pack_rollouts(batch, think_adv, summ_adv)
    n = float("nan")
    expected = torch.tensor(
        [
            [n, n, n, -0.1, -0.2, -0.3, n, n, -1.1, -1.2, n, -1.3],  # row 0: same layout as test_layout_by_hand
            [n] * 12,
        ]
    )
    torch.testing.assert_close(p.rollout_logprobs, expected, equal_nan=True)
    u = unpack_rollouts(batch, think_adv, summ_adv)  # the same values on the same trainable tokens
    torch.testing.assert_close(u.rollout_logprobs[u.trainable_mask], p.rollout_logprobs[p.trainable_mask], equal_nan=True)
    t0.thinking_logprobs = [-0.1]
    with pytest.raises(ValueError, match="engine log-probs: 1 values for 3 sampled tokens"):
        pack_rollouts(batch, think_adv, summ_adv)


def test_first_fit_bins_by_hand():
    # Decreasing: 9 opens bin 0 (room 1), 7 opens bin 1 (room 3), 5 opens bin 2 (room 5),
    # 3 fits bin 1 (room 0), 2 fits bin 2 (room 3), 1 fits bin 0 (room 0).
    assert first_fit_bins([5, 9, 3, 7, 2, 1], 10) == [[1, 5], [3, 2], [0, 4]]
    assert first_fit_bins([12, 4], 10) == [[0], [1]]  # too long: a bin of its own


def test_merge_rows_by_hand():
    """Row 1 of the hand batch (8 tokens) placed after row 0 (12 tokens) in one 20-token row."""
    batch, think_adv, summ_adv = hand_batch()
    p = pack_rollouts(batch, think_adv, summ_adv)
    placement = RowPlacement.of(p.lengths, [[0, 1]])
    m = merge_rows(p, placement)
    assert (m.n_rows, m.width) == (1, 20) and m.lengths.tolist() == [20]
    assert m.input_ids[0].tolist() == p.input_ids[0].tolist() + p.input_ids[1, :8].tolist()
    assert m.doc_ids[0].tolist() == [0] * 12 + [1] * 8
    # positions restart for the second tree; its prev / visible indices move by 12
    assert m.position_ids[0, 12:].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]  # blocks restart at 2 + 1 = 3
    assert m.prev_index[0, 12:].tolist() == [-1, 12, 13, 14, 15, 14, 17, 18]  # block starts: 2+1-1 = 2 → 14
    assert m.visible_trunk[0, 12:].tolist() == [0, 0, 0, 15, 15, 15, 15, 15]  # 3 trunk tokens → 12 + 3
    allowed = allowed_attention(m.segment_ids, m.visible_trunk, m.doc_ids)[0]  # [20, 20]
    own = allowed_attention(p.segment_ids, p.visible_trunk, p.doc_ids)  # [2, 12, 12]
    assert torch.equal(allowed[:12, :12], own[0]) and torch.equal(allowed[12:, 12:], own[1, :8, :8])
    assert not allowed[12:, :12].any() and not allowed[:12, 12:].any()  # no tree sees another
    assert not m.is_causal
    # the per-token values travel with their tokens, and back
    assert torch.equal(placement.unplace(m.advantages, 12), p.advantages)
    assert torch.equal(placement.place(p.trainable_mask, False), m.trainable_mask)


def test_two_causal_trees_in_one_row_are_not_causal():
    t = Thinking(prompt_ids=[1, 2], thinking_ids=[3], closed=True, cuts=[1], summaries=[[]])
    batch = RolloutBatch(budgets=(4,), thinkings=[[t, t]])
    p = pack_rollouts(batch, torch.zeros(1, 2, 1), torch.zeros(1, 2, 1, 0))
    assert p.is_causal
    m = merge_rows(p, RowPlacement.of(p.lengths, [[0, 1]]))
    assert not m.is_causal and m.doc_ids.tolist() == [[0, 0, 0, 1, 1, 1]]


def shared_hand_batch() -> RolloutBatch:
    """B = 1, G = 3 of one prompt [11 12 13], budgets (2, 4), A = 1: thinking 0 and its blocks as in
    :func:`hand_batch` (12 tokens); thinking 1 = [24], cuts [1, 1] (3 + 1 + 2 + 3 = 9 tokens);
    thinking 2 empty, cuts [0, 0] (3 + 2 + 2 = 7 tokens: its blocks follow the prompt)."""
    t0, _ = hand_batch()[0].thinkings[0]
    t1 = Thinking([11, 12, 13], [24], True, [1, 1], [[_summary([94], [34])], [_summary([94], [35, 36])]])
    t2 = Thinking([11, 12, 13], [], True, [0, 0], [[_summary([95], [37])], [_summary([95], [38])]])
    return RolloutBatch(budgets=(2, 4), thinkings=[[t0, t1, t2]])


def shared_hand_rows():
    """The three trees of :func:`shared_hand_batch` in one row, the prompt once."""
    p = pack_rollouts(shared_hand_batch(), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2, 1))
    return merge_rows(p, RowPlacement.sharing(p, [[0, 1, 2]]))


def test_shared_prompt_by_hand():
    """Trees 1 and 2 skip their prompt (3 tokens each): 12 + 6 + 4 = 22 tokens instead of 28."""
    p = pack_rollouts(shared_hand_batch(), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2, 1))
    assert prompt_groups(p) == [0, 0, 0]
    assert shared_prompt_plan(p.lengths.tolist(), p.prompt_lengths.tolist(), [0, 0, 0], [[0, 1, 2]]) == ([0, 3, 3], [0, 0, 0])
    # two bins: the group's first row in each bin keeps its prompt
    assert shared_prompt_plan([12, 9, 7], [3, 3, 3], [0, 0, 0], [[0], [1, 2]]) == ([0, 0, 3], [0, 1, 1])
    m = shared_hand_rows()
    assert (m.n_rows, m.width) == (1, 22) and m.lengths.tolist() == [22]
    assert m.input_ids[0].tolist() == p.input_ids[0].tolist() + [24, 94, 34, 94, 35, 36] + [95, 37, 95, 38]
    assert m.doc_ids[0].tolist() == [0] * 12 + [1] * 6 + [2] * 4
    # positions as in their own rows: tree 1's thinking at 3, blocks at 3 + 1; tree 2's blocks at 3 + 0
    assert m.position_ids[0, 12:].tolist() == [3, 4, 5, 4, 5, 6] + [3, 4, 3, 4]
    # tree 1: its thinking token is predicted by the prompt's last token (2); its blocks start from
    # its thinking (12, now at 12 + 0) and go on inside (13; 15, 16). Tree 2: both blocks start from 2.
    assert m.prev_index[0, 12:].tolist() == [2, 12, 13, 12, 15, 16] + [2, 18, 2, 20]
    assert m.visible_trunk[0, 12:].tolist() == [0] + [13] * 5 + [18] * 4  # trunk ends: 12 + 1, 18 + 0
    assert m.shared_start[0].tolist() == [0] * 22 and m.shared_end[0].tolist() == [0] * 12 + [3] * 10
    allowed = allowed_attention(m.segment_ids, m.visible_trunk, m.doc_ids, (m.shared_start, m.shared_end))[0]
    seen = lambda q: allowed[q].nonzero().flatten().tolist()  # noqa: E731
    assert seen(12) == [0, 1, 2, 12]  # tree 1's thinking: the prompt, itself; not tree 0's thinking
    assert seen(14) == [0, 1, 2, 12, 13, 14]  # its first block: prompt, thinking[:1], own block
    assert seen(17) == [0, 1, 2, 12, 15, 16, 17]  # its second block: not the first block
    assert seen(21) == [0, 1, 2, 20, 21]  # tree 2's second block: the prompt and itself
    assert seen(5) == [0, 1, 2, 3, 4, 5]  # tree 0 sees nothing of the others
    # the trees' per-token values travel with their tokens; skipped prompt tokens come back as 0
    placement = RowPlacement.of(p.lengths, [[0, 1, 2]], [0, 3, 3], [0, 0, 0])
    assert placement.unplace(m.position_ids, 12)[1].tolist() == [0, 0, 0, 3, 4, 5, 4, 5, 6, 0, 0, 0]
    with pytest.raises(ValueError, match="already hold several trees"):
        merge_rows(m, RowPlacement.of(m.lengths, [[0]]))


def test_first_fit_bins_counts_shared_prompts():
    """Capacity 20, rows of 12, 9, 7 tokens with prompts of 3 in one group: 12 opens bin 0 (room 8),
    9 costs 9 − 3 = 6 there (room 2), 7 costs 4: a new bin. Without groups 9 does not fit after 12
    (a new bin, room 11) and 7 does (room 8). Rows run: 12 + 6 and 7 = 25 tokens with groups, 12 + 7 and 9 = 28
    without (no prompt shared)."""
    assert first_fit_bins([12, 9, 7], 20, [0, 0, 0], [3, 3, 3]) == [[0, 1], [2]]
    assert first_fit_bins([12, 9, 7], 20) == [[0, 2], [1]]
    # groups are taken together, the group of the longest row first: 9 (group 1) opens a bin before 8 (group 0)
    assert first_fit_bins([8, 9, 6, 5], 14, [0, 1, 0, 1], [4, 4, 4, 4]) == [[1, 3], [0, 2]]
