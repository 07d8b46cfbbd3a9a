"""``train.flex``: FlexAttention for packed rows, compiled a bounded number of times.

On the CPU FlexAttention runs forward only (no backward), uncompiled: the log-prob checks here
compare it with the dense mask; the compile count is measured with dynamo and a counting backend
(the guards, and so the recompiles, do not depend on the backend) over a sweep of micro-batch
shapes like the trainer's: several widths, one row and several, causal and tree rows.
"""

from __future__ import annotations

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model
from torch.nn.attention.flex_attention import flex_attention

from anytime_reasoner.train import flex
from anytime_reasoner.train.logprobs import attention_inputs, packed_logprobs
from anytime_reasoner.train.masks import flex_block_mask
from anytime_reasoner.train.packing import PackedBatch, RowPlacement, first_fit_bins, merge_rows, pack_rollouts
from anytime_reasoner.train.update import stand_in_row

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")


def test_flex_width_rounds_up_to_whole_blocks_of_at_least_two():
    # 128-token blocks, at least 2: 1 → 256, 256 → 256, 257 → 3 blocks = 384, 1000 → 8 blocks = 1024
    assert [flex.flex_width(t) for t in (1, 128, 256, 257, 1000, 1024)] == [256, 256, 256, 384, 1024, 1024]


def test_padding_a_batch_changes_no_logprob():
    model = tiny_model("qwen2", "sdpa")
    batch = make_rollouts([[3, 8]], (4, 8), n_summary=2)
    packed = pack_rollouts(batch, *random_advantages(batch))
    wide = packed.padded_to(packed.width + 37)
    assert wide.width == packed.width + 37 and bool((wide.segment_ids[:, packed.width :] == -1).all())
    assert not bool(wide.trainable_mask[:, packed.width :].any()) and bool((wide.prev_index[:, packed.width :] == -1).all())
    torch.testing.assert_close(packed_logprobs(model, wide)[:, : packed.width], packed_logprobs(model, packed), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="below"):
        packed.padded_to(packed.width - 1)


def _batches() -> list[PackedBatch]:
    """Micro-batches as the update builds them: tree rows one per thinking, several trees per row
    (first-fit), a single row, and the causal stand-in row."""
    batch = make_rollouts([[2, 5, 11], [12, 7, 3]], (4, 8, 12), n_summary=2, seed=3)
    packed = pack_rollouts(batch, *random_advantages(batch))
    sizes = packed.lengths.tolist()
    merged = merge_rows(packed, RowPlacement.of(packed.lengths, first_fit_bins(sizes, max(sizes) + 40)))
    assert merged.n_rows < packed.n_rows  # some rows hold two trees
    return [packed, merged, packed.select([0]), stand_in_row(0, torch.device("cpu"))]


@torch.no_grad()
def test_flex_model_matches_the_dense_mask_on_every_kind_of_batch():
    implementation = flex.register()
    dense = tiny_model("qwen2", "sdpa", seed=2)
    flexed = tiny_model("qwen2", implementation, seed=2)
    for batch in _batches():
        mask, _ = attention_inputs(flexed, batch.padded_to(flex.flex_width(batch.width)))
        assert type(mask).__name__ == "BlockMask"  # causal rows too: one mask function for every call
        by_flex = packed_logprobs(flexed, batch)  # padded to a multiple of 128 inside, cut back
        assert by_flex.shape == batch.input_ids.shape
        torch.testing.assert_close(by_flex, packed_logprobs(dense, batch), atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_flex_loaded_model_generates_through_sdpa():
    implementation = flex.register()
    ids = torch.tensor([[1, 2, 3, 4]])
    by_sdpa = tiny_model("qwen2", "sdpa", seed=1).generate(ids, max_new_tokens=6, do_sample=False)
    by_flex_model = tiny_model("qwen2", implementation, seed=1).generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(by_flex_model, by_sdpa)  # no BlockMask: sdpa, uncompiled


def _sweep(call) -> list[tuple[int, int]]:
    """Run ``call(q, k, v, block_mask)`` over micro-batch shapes of a run: N rows of width T (a
    multiple of 128), tree and causal rows; returns the shapes run."""
    shapes = [(2, 256), (3, 384), (2, 512), (1, 256), (4, 1024), (1, 640), (5, 384), (2, 768), (1, 1280), (6, 256)]
    for i, (n, t) in enumerate(shapes):
        batch = _batches()[i % 4]
        rows = batch.select([r % batch.n_rows for r in range(n)]).padded_to(t)
        block_mask = flex_block_mask(rows, block_size=flex.FLEX_BLOCK)
        q, k, v = torch.randn(n, 4, t, 8), torch.randn(n, 2, t, 8), torch.randn(n, 2, t, 8)
        call(q, k, v, block_mask)
    return shapes


@torch.no_grad()
def test_compiles_stay_bounded_over_a_sweep_of_micro_batch_shapes(capsys):
    compiles = {"bounded": 0, "static": 0}

    def counting(kind):
        def backend(graph, example_inputs):
            compiles[kind] += 1
            return graph.forward

        return backend

    torch._dynamo.reset()
    bounded = torch.compile(flex_attention, backend=counting("bounded"), dynamic=None)
    shapes = _sweep(lambda q, k, v, m: flex.flex_core(q, k, v, m, None, bounded))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=64):  # transformers' training-mode compile: static shapes
        static = torch.compile(flex_attention, backend=counting("static"), dynamic=False)
        _sweep(lambda q, k, v, m: static(q, k, v, block_mask=m, enable_gqa=True))
    torch._dynamo.reset()
    with capsys.disabled():
        print(
            f"\nflex compiles over {len(shapes)} micro-batch shapes (no-grad): {compiles['bounded']} (static shapes: {compiles['static']})"
        )
    # one static first graph, one with dynamic N and T, one for N = 1: 3 per grad mode, 6 for a run < the limit
    assert compiles["bounded"] <= 3
    assert compiles["static"] == len(set(shapes))  # a graph per shape: past dynamo's default limit of 8
    assert 2 * compiles["bounded"] < 8 <= flex.RECOMPILE_LIMIT


def test_registering_raises_the_recompile_limit():
    with torch._dynamo.config.patch(recompile_limit=8):  # dynamo's default, restored on exit
        assert flex.register() == "anytime_flex"
        assert torch._dynamo.config.recompile_limit == flex.RECOMPILE_LIMIT
