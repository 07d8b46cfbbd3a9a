"""Packed log-probs equal those of the unpacked sequences; chunked equals unchunked."""

from __future__ import annotations

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model

from anytime_reasoner.train.logprobs import attn_implementation_for, packed_logprobs, sequence_logprobs
from anytime_reasoner.train.packing import pack_rollouts, unpack_rollouts

BUDGETS = (4, 8, 12)
# Thinking lengths: before b1 (2), exactly at b1 (4), between (7); at b2 (8), between (10),
# at b_max without think-end (12, cut inside at every budget).
LENGTHS = [[2, 4, 7], [8, 10, 12]]


def reference_logprobs(model, ids: list[int]) -> list[float]:
    """Log-probs of ``ids[1:]`` from the model's own forward on the single plain sequence."""
    row = torch.tensor([ids])
    return sequence_logprobs(model, row, chunk_size=None)[0, 1:].tolist()


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("llama", "sdpa")])
def test_packed_equals_unpacked_sequences(arch, attn):
    model = tiny_model(arch, attn)
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=1)
    think_adv, summ_adv = random_advantages(batch)
    packed = pack_rollouts(batch, think_adv, summ_adv)
    with torch.no_grad():
        logprobs = packed_logprobs(model, packed, tokens="all", chunk_size=16)  # [N, T]
        checked_blocks = 0
        for n, t in enumerate(th for row in batch.thinkings for th in row):
            trunk = t.prompt_ids + t.thinking_ids
            expected = reference_logprobs(model, trunk)
            assert logprobs[n, 1 : len(trunk)].tolist() == pytest.approx(expected, abs=1e-5)
            offset = len(trunk)
            for s, per_budget in enumerate(t.summaries):
                prefix = t.prompt_ids + t.thinking_ids[: t.cuts[s]]
                for summary in per_budget:
                    block = summary.inserted_ids + summary.sampled_ids
                    expected = reference_logprobs(model, prefix + block)[-len(block) :]
                    got = logprobs[n, offset : offset + len(block)].tolist()
                    assert got == pytest.approx(expected, abs=1e-5), (n, s)
                    offset += len(block)
                    checked_blocks += 1
            assert offset == int(packed.lengths[n])
    assert checked_blocks == 6 * 3 * 2


def test_packed_equals_unpack_rollouts_on_trainable_tokens():
    model = tiny_model("qwen2", "sdpa", seed=3)
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=2)
    think_adv, summ_adv = random_advantages(batch)
    packed = pack_rollouts(batch, think_adv, summ_adv)
    unpacked = unpack_rollouts(batch, think_adv, summ_adv)
    with torch.no_grad():
        by_tree = packed_logprobs(model, packed)[packed.trainable_mask]  # [M]
        by_rows = packed_logprobs(model, unpacked)[unpacked.trainable_mask]  # [M]
    torch.testing.assert_close(by_tree, by_rows, atol=1e-5, rtol=0)


def test_chunked_equals_unchunked():
    model = tiny_model("llama", "sdpa", seed=4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (3, 20), generator=gen)  # [3, 20]
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # right padding
    mask[2, 9:] = 0
    reference = sequence_logprobs(model, ids, mask, chunk_size=None)  # [3, 20]
    for chunk in (1, 7, 1000):
        torch.testing.assert_close(sequence_logprobs(model, ids, mask, chunk_size=chunk), reference, atol=1e-5, rtol=0)
    assert reference[1, 15:].abs().sum() == 0 and reference[:, 0].abs().sum() == 0


def test_chunked_gradient_equals_unchunked():
    model = tiny_model("qwen2", "sdpa", seed=5)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))  # [2, 12]

    def grads(chunk):
        model.zero_grad()
        sequence_logprobs(model, ids, chunk_size=chunk).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    for full, chunked in zip(grads(None), grads(5), strict=False):
        torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-4)


def test_attn_implementation_choice():
    assert attn_implementation_for("auto", "cpu") == "anytime_tree"  # train.tree_attention
    assert attn_implementation_for("tree", "cpu") == "anytime_tree"
    assert attn_implementation_for("dense", "cpu") == "sdpa"
    assert attn_implementation_for("auto", "cuda") == "anytime_flex"  # train.flex
    assert attn_implementation_for("dense", "cuda") == "sdpa"
    assert attn_implementation_for("flex", "cpu") == "anytime_flex"


def test_flex_requested_on_a_dense_model_is_an_error():
    model = tiny_model("qwen2", "sdpa")
    batch = make_rollouts([[3]], (4,), n_summary=1)
    packed = pack_rollouts(batch, *random_advantages(batch))
    with pytest.raises(ValueError, match="anytime_flex"):
        packed_logprobs(model, packed, attention="flex")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward on CPU; HF compiles it (slow)")
def test_flex_attention_model_matches_dense_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    dense_model = tiny_model("qwen2", "sdpa").cuda()
    flex_model = tiny_model("qwen2", attn_implementation_for("flex", "cuda")).cuda()
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=1)
    packed = pack_rollouts(batch, *random_advantages(batch)).to("cuda")
    by_dense = packed_logprobs(dense_model, packed)  # [N, T]
    by_flex = packed_logprobs(flex_model, packed)  # [N, T]
    torch.testing.assert_close(by_flex, by_dense, atol=1e-4, rtol=0)
    by_flex.sum().backward()  # FlexAttention backward runs on CUDA
    assert all(p.grad is not None for p in flex_model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("llama", "eager")])
def test_several_trees_per_row_give_the_same_logprobs(arch, attn):
    """Six trees first-fit into rows as wide as the longest: every token's log-prob unchanged."""
    from anytime_reasoner.train.packing import RowPlacement, first_fit_bins, merge_rows

    model = tiny_model(arch, attn, seed=4)
    batch = make_rollouts(LENGTHS, BUDGETS, n_summary=2, seed=5)
    packed = pack_rollouts(batch, *random_advantages(batch))
    sizes = packed.lengths.tolist()
    bins = first_fit_bins(sizes, max(sizes) + 40)  # room for a second tree in most rows
    assert any(len(b) > 1 for b in bins)
    placement = RowPlacement.of(packed.lengths, bins)
    merged = merge_rows(packed, placement)
    assert merged.n_rows < packed.n_rows
    with torch.no_grad():
        one_per_row = packed_logprobs(model, packed, tokens="all")  # [6, T]
        several = placement.unplace(packed_logprobs(model, merged, tokens="all"), packed.width)  # [6, T]
    torch.testing.assert_close(several, one_per_row, atol=1e-5, rtol=0)
