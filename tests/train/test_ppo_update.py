"""The PPO update over packed rows: splitting, normalizer, gradient accumulation, direction."""

from __future__ import annotations

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model

from anytime_reasoner.config import PPOConfig
from anytime_reasoner.train.logprobs import packed_logprobs
from anytime_reasoner.train.packing import pack_rollouts, unpack_rollouts
from anytime_reasoner.train.tree_attention import register
from anytime_reasoner.train.update import (
    _Tally,
    accumulate_gradients,
    build_optimizer,
    compute_old_logprobs,
    minibatch_normalizer,
    ppo_update,
    question_mini_batches,
    token_budget_micro_batches,
)

BUDGETS = (4, 8)


def test_micro_batches_by_hand():
    # Longest first: 9 | 7, 5 (2·7 = 14 ≤ 16; adding 3 → 3·7 = 21 > 16) | 3
    assert token_budget_micro_batches(torch.tensor([5, 9, 3, 7]), 16) == [[1], [3, 0], [2]]
    # A row longer than the budget goes alone.
    assert token_budget_micro_batches(torch.tensor([40, 2]), 16) == [[0], [1]]


def test_question_mini_batches_by_hand():
    rows = question_mini_batches(torch.tensor([0, 0, 1, 1, 2, 2]), 2)
    assert [r.tolist() for r in rows] == [[0, 1, 2, 3], [4, 5]]


def test_normalizer_counts_rollouts():
    batch = make_rollouts([[3, 5], [6, 8]], BUDGETS, n_summary=2)
    think_adv, summ_adv = random_advantages(batch)
    packed = pack_rollouts(batch, think_adv, summ_adv)
    unpacked = unpack_rollouts(batch, think_adv, summ_adv)
    # 4 rollouts × 50 for both, though the unpacked batch has 4·(1 + 2·2) = 20 rows.
    assert minibatch_normalizer(packed, "constant", 50) == 200.0
    assert minibatch_normalizer(unpacked, "constant", 50) == 200.0
    trainable = int(packed.trainable_mask.sum())
    assert minibatch_normalizer(packed, "token-mean", None) == minibatch_normalizer(unpacked, "token-mean", None) == trainable


def _grads_after(model, batch, old_logprobs, max_token_len, normalizer=100.0):
    model.zero_grad(set_to_none=True)
    tally = _Tally()
    accumulate_gradients(
        model, batch, old_logprobs, normalizer=normalizer, clip_eps=0.2, max_token_len=max_token_len, tally=tally
    )
    return [p.grad.clone() for p in model.parameters()], tally


def test_one_vs_four_micro_batches_same_gradient():
    model = tiny_model("qwen2", "sdpa", seed=1)
    batch = make_rollouts([[3, 6, 8, 7]], BUDGETS, n_summary=2, seed=3)
    packed = pack_rollouts(batch, *random_advantages(batch, seed=1))
    old = compute_old_logprobs(model, packed, max_token_len=10_000)
    # ratios ≠ 1, some clipped
    old = old + 0.3 * torch.randn(old.shape, generator=torch.Generator().manual_seed(0)) * packed.trainable_mask
    one, tally_one = _grads_after(model, packed, old, max_token_len=10_000)
    four, tally_four = _grads_after(model, packed, old, max_token_len=int(packed.lengths.max()))
    assert (tally_one.micro_batches, tally_four.micro_batches) == (1, 4)
    assert 0 < tally_one.clip_tokens < tally_one.tokens  # the clipped branch is exercised
    for a, b in zip(one, four, strict=False):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert abs(tally_one.loss - tally_four.loss) < 1e-6


@pytest.mark.parametrize("attn", ["sdpa", "anytime_tree"])
def test_several_trees_per_row_give_the_same_gradient_with_less_padding(attn):
    register()
    model = tiny_model("qwen2", attn, seed=5)
    # thinkings of 1-3 tokens (rows of 13-20 tokens) fit beside one another in rows of the longest (39)
    batch = make_rollouts([[1, 16, 2, 16], [1, 16, 3, 15]], (8, 16), n_summary=1, seed=4, same_prompt=True)
    packed = pack_rollouts(batch, *random_advantages(batch, seed=2))
    old = compute_old_logprobs(model, packed, max_token_len=10_000)
    for share in (False, True):
        shared_old = compute_old_logprobs(model, packed, max_token_len=10_000, multi_tree=True, share_prompts=share)
        assert torch.allclose(old * packed.trainable_mask, shared_old * packed.trainable_mask, atol=1e-5)
    old = old + 0.3 * torch.randn(old.shape, generator=torch.Generator().manual_seed(1)) * packed.trainable_mask
    grads, tallies = {}, {}
    for layout in ("one", "several", "shared"):  # a tree a row; several; several, a prompt once a row
        model.zero_grad(set_to_none=True)
        tally = _Tally()
        accumulate_gradients(
            model, packed, old, normalizer=80.0, clip_eps=0.2, max_token_len=10_000, tally=tally,
            multi_tree=layout != "one", share_prompts=layout == "shared",
        )  # fmt: skip
        grads[layout] = [p.grad.clone() for p in model.parameters()]
        tallies[layout] = tally
    for layout in ("several", "shared"):
        for a, b in zip(grads["one"], grads[layout], strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    one, several, shared = tallies["one"], tallies["several"], tallies["shared"]
    assert one.tokens == several.tokens == shared.tokens
    assert one.row_tokens == several.row_tokens == int(packed.lengths.sum())
    assert several.padded_tokens < one.padded_tokens  # same real tokens in fewer, fuller rows
    prompts = packed.prompt_lengths.tolist()  # [8]: 4 thinkings of question 0, then 4 of question 1
    if attn == "anytime_tree":  # rows as wide as the budget: all 8 trees in one row, no padding, 2 prompts
        assert several.micro_batches == 1 and several.padded_tokens == several.row_tokens
        assert shared.row_tokens == shared.padded_tokens == several.row_tokens - 3 * prompts[0] - 3 * prompts[4]
    else:  # rows of the longest tree: still fewer tokens than one copy per tree
        assert shared.row_tokens < several.row_tokens and shared.padded_tokens <= several.padded_tokens
    assert abs(one.loss - several.loss) < 1e-6 and abs(one.loss - shared.loss) < 1e-6


def test_packed_and_unpacked_give_the_same_gradient():
    model = tiny_model("llama", "sdpa", seed=2)
    batch = make_rollouts([[5, 8], [2, 7]], BUDGETS, n_summary=2, seed=4)
    think_adv, summ_adv = random_advantages(batch, seed=2)
    grads = []
    for rows in (pack_rollouts(batch, think_adv, summ_adv), unpack_rollouts(batch, think_adv, summ_adv)):
        old = compute_old_logprobs(model, rows, max_token_len=10_000) - 0.1 * rows.trainable_mask  # ratio e^0.1
        normalizer = minibatch_normalizer(rows, "constant", 64)
        grads.append(_grads_after(model, rows, old, 10_000, normalizer)[0])
    for a, b in zip(*grads, strict=False):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def _rollout_mean_logprobs(model, packed):
    with torch.no_grad():
        logprobs = packed_logprobs(model, packed)  # [N, T]
    mask = packed.trainable_mask
    return (logprobs * mask).sum(dim=1) / mask.sum(dim=1)  # [N]


def test_update_moves_logprobs_with_the_sign_of_the_advantage():
    model = tiny_model("qwen2", "sdpa", seed=3)
    batch = make_rollouts([[6, 8]], BUDGETS, n_summary=2, seed=5)
    B, G, S, A = batch.shape
    think_adv = torch.tensor([[[1.0] * S, [-1.0] * S]])  # [1, 2, S]: rollout 0 good, rollout 1 bad
    summ_adv = think_adv[..., None].expand(B, G, S, A).clone()  # [1, 2, S, A]
    packed = pack_rollouts(batch, think_adv, summ_adv)
    before = _rollout_mean_logprobs(model, packed)  # [2]
    cfg = PPOConfig(lr=1e-3, ppo_mini_batch_size=1, grad_clip=10.0)
    model.train()
    metrics = ppo_update(model, build_optimizer(model, cfg), packed, cfg, max_response_len=64)
    model.eval()
    after = _rollout_mean_logprobs(model, packed)  # [2]
    assert after[0] > before[0] and after[1] < before[1]
    # One mini-batch: the old log-probs are the current ones, so every ratio is 1 before the step.
    assert metrics["optimizer_steps"] == 1 and metrics["micro_batches"] == 1
    assert abs(metrics["ratio_min"] - 1) < 1e-5 and abs(metrics["ratio_max"] - 1) < 1e-5
    assert metrics["clip_frac"] == 0 and abs(metrics["approx_kl"]) < 1e-6
    assert metrics["tokens"] == int(packed.trainable_mask.sum())
    assert metrics["grad_norm"] > 0


def test_mini_batches_and_epochs_count_steps():
    model = tiny_model("qwen2", "sdpa", seed=4)
    batch = make_rollouts([[3, 5], [6, 8], [2, 4]], BUDGETS, n_summary=1, seed=6)
    packed = pack_rollouts(batch, *random_advantages(batch, seed=3))
    cfg = PPOConfig(lr=1e-4, ppo_mini_batch_size=2, ppo_epochs=2, ppo_max_token_len=64)
    metrics = ppo_update(model, build_optimizer(model, cfg), packed, cfg, max_response_len=64)
    # 3 questions in mini-batches of 2 → 2 steps per epoch, 2 epochs → 4 steps.
    assert metrics["optimizer_steps"] == 4 and metrics["skipped_steps"] == 0
    assert metrics["tokens"] == int(packed.trainable_mask.sum())
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("mini,epochs", [(2, 1), (1, 2)])  # one mini-batch of two questions; two of one, twice
def test_on_policy_first_mini_batch_trains_as_with_old_logprobs_given(mini, epochs):
    """The first mini-batch takes its old log-probs from its own forward: the update (weights and
    every metric) is the one given the old log-probs of a separate no-grad pass."""
    batch = make_rollouts([[3, 6], [8, 5]], BUDGETS, n_summary=2, seed=8)
    packed = pack_rollouts(batch, *random_advantages(batch, seed=4))
    cfg = PPOConfig(lr=1e-3, ppo_mini_batch_size=mini, ppo_epochs=epochs, grad_clip=10.0)
    results, forwards = [], []
    for given in (False, True):
        model = tiny_model("qwen2", "sdpa", seed=6)
        old = compute_old_logprobs(model, packed, max_token_len=30720) if given else None
        calls: list[int] = []  # one per forward pass: the embedding runs once in each
        hook = model.get_input_embeddings().register_forward_hook(lambda *_, calls=calls: calls.append(1))
        metrics = ppo_update(model, build_optimizer(model, cfg), packed, cfg, max_response_len=64, old_logprobs=old)
        hook.remove()
        forwards.append(len(calls))
        results.append((metrics, [p.detach().clone() for p in model.parameters()]))
    (on_policy, weights), (precomputed, expected) = results
    # one micro-batch per mini-batch: the on-policy update runs the training forwards plus one
    # no-grad pass for the mini-batches after the first (none with one mini-batch, one with two)
    assert forwards[0] == forwards[1] + (0 if mini == 2 else 1)
    for a, b in zip(weights, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for key in ("loss", "clip_frac", "approx_kl", "ratio_min", "ratio_max", "grad_norm", "tokens"):
        assert on_policy[key] == pytest.approx(precomputed[key], abs=1e-6), key
    assert on_policy["optimizer_steps"] == (2 // mini) * epochs


def test_engine_logprobs_are_compared_and_tis_weighs_the_loss():
    """Engine log-probs one nat below the trainer's (r = e ≈ 2.718 on every token): the update
    reports |Δ| = 1 and r = e; with ``tis_cap = 2`` every token's loss is weighted by min(e, 2) = 2,
    so the one-mini-batch loss (ratio 1 before the step) is exactly twice the unweighted one."""
    from dataclasses import replace

    from anytime_reasoner.train.update import compute_old_logprobs

    batch = make_rollouts([[6, 8]], BUDGETS, n_summary=2, seed=5)
    packed = pack_rollouts(batch, *random_advantages(batch, seed=2))
    model = tiny_model("qwen2", "sdpa", seed=3)
    old = compute_old_logprobs(model, packed, max_token_len=4096)  # [N, T]
    shifted = torch.where(packed.trainable_mask, old - 1.0, torch.full_like(old, float("nan")))
    packed = replace(packed, rollout_logprobs=shifted)
    losses = {}
    for cap in (0.0, 2.0):
        model = tiny_model("qwen2", "sdpa", seed=3)
        cfg = PPOConfig(lr=1e-3, ppo_mini_batch_size=1, tis_cap=cap)
        metrics = ppo_update(model, build_optimizer(model, cfg), packed, cfg, max_response_len=64)
        losses[cap] = metrics["loss"]
    assert metrics["rollout_logprob_tokens"] == int(packed.trainable_mask.sum())
    assert abs(metrics["rollout_logprob_diff_mean"] - 1.0) < 1e-5 and abs(metrics["rollout_logprob_diff_max"] - 1.0) < 1e-5
    assert abs(metrics["rollout_ratio_mean"] - torch.e) < 1e-4 and metrics["rollout_ratio_std"] < 1e-3
    assert abs(losses[2.0] - 2 * losses[0.0]) < 1e-6 * max(1.0, abs(losses[0.0])) and losses[0.0] != 0
