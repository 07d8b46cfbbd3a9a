"""engine/held_attention.py: a row's queries attending over its held head (read in place, shared by
the rows of one thinking) and its own cache give the attention of its whole sequence."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from anytime_reasoner.engine import held_attention
from anytime_reasoner.engine.held_attention import (
    HeldKV,
    HeldPrefix,
    attending_held,
    held_attention_forward,
    supports_held_attention,
)

H, H_KV, D = 4, 2, 8  # query heads, key heads (2 queries per key head), head size


def _held(generator):
    """Two held thinkings of 6 positions; the second starts with 2 positions of left padding."""
    keys = torch.randn(2, H_KV, 6, D, generator=generator)  # [n, H_kv, P, D]
    values = torch.randn(2, H_KV, 6, D, generator=generator)
    return HeldKV(((keys, values),), start=torch.tensor([0, 2]))


def _whole(held, entry, end, own_keys, own_values, own_mask, row):
    """Row ``row``'s keys and values as one sequence: its held head ``[start, end)``, then its own real
    positions ``[H_kv, K, D]`` each."""
    keys, values = held.layers[0]
    e = int(entry[row])
    head = slice(int(held.start[e]), int(end[row]))
    real = own_mask[row].bool()
    return (
        torch.cat([keys[e, :, head], own_keys[row][:, real]], dim=1),
        torch.cat([values[e, :, head], own_values[row][:, real]], dim=1),
    )


ROWS = {  # the entry each row reads, the end of what it sees, its own cache's mask
    # 3 rows: two read thinking 0 (to 4 and 6), one thinking 1 from its first real position (2) to 5;
    # stacks of 1 row waste least (1·3 slots, against 2·2), so thinking 0 fills two stacks
    "split": ([0, 0, 1], [4, 6, 5], [[1, 1, 1], [1, 1, 1], [0, 1, 1]]),
    # 4 rows, two a thinking: one stack of 2 each
    "even": ([1, 0, 0, 1], [3, 2, 6, 6], [[0, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1]]),
}


@pytest.mark.parametrize("runs", [1, 3])  # the stacks in one call (those seeing fewer positions padded), or one per width
@pytest.mark.parametrize("queries", [1, 2])  # a decoding step; the inserted text run at once (causal)
@pytest.mark.parametrize("rows", ["split", "even"])
def test_held_attention_equals_attention_over_the_whole_sequence(queries, rows, runs, monkeypatch):
    """Rows reading held thinkings (``ROWS``), each with an own cache of 3 positions (left padding
    masked): each output equals sdpa over the row's whole sequence (its held head ``[start, end)``,
    then its own real keys; the queries are its last ``queries`` own positions, causal among
    themselves), to float rounding."""
    monkeypatch.setattr(held_attention, "RUNS", runs)
    monkeypatch.setattr(held_attention, "STACK_COST", 0)  # stacks sized by their slots alone: the layouts ROWS describes
    generator = torch.Generator().manual_seed(0)
    held = _held(generator)
    entry, end, own_mask = (torch.tensor(x) for x in ROWS[rows])
    A = len(entry)
    own_keys, own_values = torch.randn(A, H_KV, 3, D, generator=generator), torch.randn(A, H_KV, 3, D, generator=generator)
    query = torch.randn(A, H, queries, D, generator=generator)  # [A, H, Q, D]
    causal = torch.arange(3)[None, :] <= torch.arange(3 - queries, 3)[:, None]  # [Q, L] query i is position L - Q + i
    mask = (own_mask.bool()[:, None, None, :] & causal[None, None]).expand(A, 1, queries, 3)  # [A, 1, Q, L] as sdpa's builder
    layout = HeldPrefix.of(held, entry, held.seen(entry, end), 2 * queries)
    assert (layout.per_entry, sum(g.count for g in layout.groups)) == ((1, 3) if rows == "split" else (2, 2))  # M, stacks
    assert len(layout.groups) == (1 if runs == 1 else 3 if rows == "split" else 2)  # "even": stacks seeing 4 and 6 positions
    module = SimpleNamespace(layer_idx=0, training=False)
    out, _ = held_attention_forward(
        module, query, own_keys, own_values, mask, scaling=D**-0.5, held_prefix=layout
    )  # [A, Q, H, D]
    for row in range(A):
        keys, values = _whole(held, entry, end, own_keys, own_values, own_mask, row)  # [H_kv, K, D]
        K = keys.shape[1]
        allowed = torch.arange(K)[None, :] <= torch.arange(K - queries, K)[:, None]  # [Q, K] the last Q positions, causal
        want = F.scaled_dot_product_attention(
            query[row], keys.repeat_interleave(2, dim=0), values.repeat_interleave(2, dim=0), attn_mask=allowed
        )  # [H, Q, D]
        real = own_mask[row, 3 - queries :].bool()  # a padding query's output is read by nobody: finite is enough
        assert torch.allclose(out[row].transpose(0, 1)[:, real], want[:, real], atol=1e-6)
    assert torch.isfinite(out).all()


def test_plain_products_equal_the_fused_kernel(monkeypatch):
    """Off the CPU the held part runs as plain products: forced here, the same outputs (1e-6)."""
    generator = torch.Generator().manual_seed(3)
    held = _held(generator)
    entry, end = torch.tensor([0, 1, 1]), torch.tensor([5, 6, 4])
    layout = HeldPrefix.of(held, entry, held.seen(entry, end), 2)
    own_keys, own_values = torch.randn(3, H_KV, 2, D, generator=generator), torch.randn(3, H_KV, 2, D, generator=generator)
    query = torch.randn(3, H, 1, D, generator=generator)
    module = SimpleNamespace(layer_idx=0, training=False)
    fused, _ = held_attention_forward(module, query, own_keys, own_values, None, held_prefix=layout)
    monkeypatch.setattr(held_attention, "_CPU_FLASH", None)
    plain, _ = held_attention_forward(module, query, own_keys, own_values, None, held_prefix=layout)
    assert torch.allclose(plain, fused, atol=1e-6)


def test_rests_join_their_thinking_entry():
    """Two prefixes of thinking 1 and one of thinking 0, their rests of 2 positions (the first of
    prefix 2 padding): placed after the entry's 6 held positions at the prefix's place among its
    entry's (m = 2 places of 2), each prefix seeing its head and its own rest only."""
    generator = torch.Generator().manual_seed(4)
    held = _held(generator)
    entry = torch.tensor([1, 0, 1])
    seen = held.seen(entry, torch.tensor([4, 3, 6]))  # [3, 6]
    rest_keys, rest_values = torch.randn(3, H_KV, 2, D, generator=generator), torch.randn(3, H_KV, 2, D, generator=generator)
    mask = torch.tensor([[1, 1], [1, 1], [0, 1]])
    extended, sees = held.with_rests(entry, seen, [(rest_keys, rest_values)], mask)
    keys = extended.layers[0][0]  # [2, H_kv, 6 + 2·2, D]
    assert keys.shape == (2, H_KV, 10, D)
    assert torch.equal(keys[:, :, :6], held.layers[0][0])
    assert torch.equal(keys[1, :, 6:8], rest_keys[0]) and torch.equal(keys[1, :, 8:10], rest_keys[2])  # thinking 1: places 0, 1
    assert torch.equal(keys[0, :, 6:8], rest_keys[1]) and not keys[0, :, 8:].any()  # thinking 0: place 0 only
    # prefix 0 sees thinking 1's [2, 4) and rest place 0; prefix 1 thinking 0's [0, 3) and place 0;
    # prefix 2 thinking 1's [2, 6) and the second position of place 1
    assert sees.int().tolist() == [
        [0, 0, 1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 1],
    ]


def test_a_stack_holds_the_positions_its_rows_see():
    """Two stacks of one row: thinking 0's ``[0, 4)`` and thinking 1's ``[2, 5)``: K = 4, thinking 1's
    three positions first, in order, then one position nobody sees."""
    held = _held(torch.Generator().manual_seed(5))
    keys, values = held.layers[0]  # [2, H_kv, 6, D]
    seen = held.seen(torch.tensor([0, 1]), torch.tensor([4, 5]))[:, None]  # [2, M = 1, 6]
    stacks = held_attention.Stacks.gather(held, torch.tensor([0, 1]), seen)
    assert stacks.visible.int().tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert torch.equal(stacks.layers[0][0][0], keys[0, :, :4]) and torch.equal(stacks.layers[0][1][0], values[0, :, :4])
    assert torch.equal(stacks.layers[0][0][1, :, :3], keys[1, :, 2:5]) and torch.equal(
        stacks.layers[0][1][1, :, :3], values[1, :, 2:5]
    )


@pytest.mark.parametrize(
    ("queries", "size"),
    [
        # a decoding step (2 query rows a row): M = 8 costs 260 stacks · (8 + 8·2) = 6,240, M = 16 134 · (8 + 16·2)
        # = 5,360 (the 96 empty slots cost less than 126 stacks more), M = 20 131 · 48 = 6,288, M = 24 128 · 56 = 7,168
        (2, 16),
        # the inserted text run at once (14 tokens: 28 query rows a row): M = 8 6,240 + 260 · 8·26 = 60,320, M = 16
        # 5,360 + 134 · 16·26 = 61,104: slots matter more than stacks, and M = 8 wastes fewer
        (28, 8),
    ],
)
def test_stacks_sized_by_their_cost(queries, size):
    """The row counts of one AR step's summary call: 2 thinkings read by 8 rows, 5 by 12, 115 by 16, 3 by 20, 3 by 24."""
    counts = torch.tensor([8] * 2 + [12] * 5 + [16] * 115 + [20] * 3 + [24] * 3)
    assert held_attention._stack_size(counts, queries) == size


@pytest.mark.parametrize(
    ("widths", "most", "ends"),
    [
        # runs [0, 2), [2, 4): 2·2 + 2·100 = 204, against [0, 1), [1, 4): 1 + 3·100 = 301 and one run: 4·100 = 400
        ([1, 2, 100, 100], 2, [2, 4]),
        ([1, 2, 100, 100], 3, [1, 2, 4]),  # 1 + 2 + 2·100 = 203
        ([7, 7, 7], 3, [3]),  # one width: one run (more would attend as many positions)
        ([1, 2, 100, 100], 1, [4]),
    ],
)
def test_stacks_run_in_few_calls_of_few_positions(widths, most, ends):
    assert held_attention._runs(torch.tensor(widths), most) == ends


def test_stacks_in_runs_by_width_and_rows_that_stay_stacked_anew(monkeypatch):
    """Stacks are ordered by the positions their rows see and run in calls of one width; ``select``
    stacks the rows that stay anew (the stacks nobody reads are dropped) and each staying row gets
    the output it had among all three."""
    monkeypatch.setattr(held_attention, "STACK_COST", 0)  # stacks sized by their slots alone
    generator = torch.Generator().manual_seed(1)
    held = _held(generator)
    keys = held.layers[0][0]  # [2, H_kv, 6, D]
    entry, end = torch.tensor([0, 0, 1]), torch.tensor([4, 6, 5])
    layout = HeldPrefix.of(held, entry, held.seen(entry, end), 2)
    # stacks of 1 row (ROWS["split"]) seeing 4 (thinking 0's [0, 4)), 6 ([0, 6)) and 3 positions
    # (thinking 1's [2, 5)): by that count row 2's stack, row 0's, row 1's, each a call of its own
    # (3 + 4 + 6 = 13 positions against 3·6 = 18 in one)
    assert layout.per_entry == 1 and layout.slot.tolist() == [1, 2, 0]
    assert [g.visible.shape[1] for g in layout.groups] == [3, 4, 6]
    assert torch.equal(layout.groups[0].layers[0][0][0], keys[1, :, 2:5]) and torch.equal(
        layout.groups[2].layers[0][0][0], keys[0]
    )
    own_keys, own_values = torch.randn(3, H_KV, 1, D, generator=generator), torch.randn(3, H_KV, 1, D, generator=generator)
    query = torch.randn(3, H, 1, D, generator=generator)
    module = SimpleNamespace(layer_idx=0, training=False)
    every, _ = held_attention_forward(module, query, own_keys, own_values, None, held_prefix=layout)
    stay = torch.tensor([0, 2])
    some_layout = layout.select(stay)
    # rows 0 and 2: row 2's stack (3 positions), then row 0's (4)
    assert some_layout.slot.tolist() == [1, 0] and [g.visible.shape[1] for g in some_layout.groups] == [3, 4]
    some, _ = held_attention_forward(module, query[stay], own_keys[stay], own_values[stay], None, held_prefix=some_layout)
    assert torch.allclose(some, every[stay], atol=1e-6)


def test_held_prefix_refuses_a_sliding_window():
    held = _held(torch.Generator().manual_seed(2))
    layout = HeldPrefix.of(held, torch.tensor([0]), held.seen(torch.tensor([0]), torch.tensor([3])), 2)
    x = torch.zeros(1, H, 1, D)
    with pytest.raises(ValueError, match="sliding windows"):
        held_attention_forward(
            SimpleNamespace(layer_idx=0, training=False), x, x[:, :H_KV], x[:, :H_KV], None, held_prefix=layout, sliding_window=4
        )


def test_attending_held_switches_the_model_and_back(tiny_model_factory):
    """Inside the block the model runs ``anytime_held``; after it (an error included) its own implementation."""
    model = tiny_model_factory()
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="inside"):
        with attending_held(model):
            assert model.config._attn_implementation == "anytime_held"
            raise RuntimeError("inside")
    assert model.config._attn_implementation == before


def test_only_full_attention_models_read_in_place(tiny_model_factory):
    """A Qwen2 of full-attention layers reads held heads in place; one with a sliding-window layer
    (``layer_types``) keeps the row-by-row fork."""
    model = tiny_model_factory()
    assert supports_held_attention(model)
    model.config.layer_types = ["full_attention", "sliding_attention"]
    assert not supports_held_attention(model)


@pytest.mark.parametrize("own", [1, 8, 9])  # 8 · 2 · 24 = 384 < 400: padded to 9 positions; 9 · 2 · 24 = 432: as it is
def test_own_keys_weighted_as_plain_products(own):
    """``_weighted`` (the rows' own values, padded with zeros up to ATen's BLAS path) equals ``weights @ values``."""
    generator = torch.Generator().manual_seed(6)
    weights, values = torch.rand(5, 2, 2, own, generator=generator), torch.randn(5, 2, own, 24, generator=generator)
    assert torch.allclose(held_attention._weighted(weights, values), weights @ values, atol=1e-6)
