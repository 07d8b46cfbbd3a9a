"""Mixed precision trains: float32 master weights and optimizer state, bfloat16 compute.

At lr 1e-6 an AdamW step moves a weight by about 1e-6, far below bfloat16's spacing near a weight
of 0.02 (2^-6 · 2^-7 ≈ 1.2e-4), so bfloat16 weights updated in place barely move; float32 master
weights take every step while the forward and backward passes run on bfloat16 casts of them
(``Runtime.cast_dtype``: what FSDP2's ``param_dtype`` computes, here in one process).
"""

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model

from anytime_reasoner.config import ConfigError, PPOConfig, TrainConfig, build_config
from anytime_reasoner.errors import UserError
from anytime_reasoner.train.packing import pack_rollouts
from anytime_reasoner.train.runtime import Runtime, check_train_dtype
from anytime_reasoner.train.update import build_optimizer, ppo_update

pytestmark = pytest.mark.usefixtures("single_thread")

# 10 optimizer steps (10 PPO epochs of one mini-batch) at lr 1e-6, no weight decay
CFG = PPOConfig(lr=1e-6, ppo_epochs=10, ppo_mini_batch_size=2, weight_decay=0.0)


def _packed():
    batch = make_rollouts([[5, 8], [6, 7]], (4, 8), n_summary=2, seed=3)
    return pack_rollouts(batch, *random_advantages(batch, seed=1))


def _train(model, runtime=None):
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    ppo_update(model, build_optimizer(model, CFG), _packed(), CFG, max_response_len=64, runtime=runtime)
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    return before, after


def _moved_share(before, after):
    moved = sum(int((after[k] != before[k]).sum()) for k in before)
    return moved / sum(v.numel() for v in before.values())


def test_bfloat16_weights_updated_in_place_barely_move():
    before, after = _train(tiny_model("qwen2", "sdpa", seed=1).to(torch.bfloat16))
    assert _moved_share(before, after) < 0.05  # measured 2.3% of the weights


def test_bfloat16_compute_moves_every_weight_and_tracks_float32():
    cpu = torch.device("cpu")
    model = tiny_model("qwen2", "sdpa", seed=1)
    before, mixed = _train(model, Runtime(device=cpu, compute_dtype=torch.bfloat16))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert all(not torch.equal(mixed[k], before[k]) for k in before)  # every trained tensor moved
    assert _moved_share(before, mixed) > 0.8  # measured 94.5% of the weights

    ref_before, full = _train(tiny_model("qwen2", "sdpa", seed=1), Runtime(device=cpu))
    assert all(torch.equal(ref_before[k], before[k]) for k in before)
    step_mixed = torch.cat([(mixed[k] - before[k]).flatten() for k in before])
    step_full = torch.cat([(full[k] - before[k]).flatten() for k in before])
    # bfloat16 gradients (8 mantissa bits) give float32's update to within 15% in norm: measured 6.6%
    assert float((step_mixed - step_full).norm() / step_full.norm()) < 0.15
    assert float(torch.nn.functional.cosine_similarity(step_mixed, step_full, dim=0)) > 0.99  # measured 0.9978


def test_float32_runtime_is_the_default_path():
    default_before, default = _train(tiny_model("qwen2", "sdpa", seed=1))
    _, explicit = _train(tiny_model("qwen2", "sdpa", seed=1), Runtime(device=torch.device("cpu")))
    assert all(torch.equal(default[k], explicit[k]) for k in default)


def test_float16_training_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"model\.dtype.*gradient scaler.*allowed: float32, bfloat16"):
        build_config(TrainConfig, overrides=["model.dtype=float16"])
    with pytest.raises(UserError, match="model.dtype: float16"):
        check_train_dtype("float16")
    assert build_config(TrainConfig, overrides=["model.dtype=bfloat16"]).model.dtype == "bfloat16"


def test_one_process_computes_on_bf16_weights_as_fsdp2_does():
    from anytime_reasoner.train.logprobs import packed_logprobs
    from anytime_reasoner.train.runtime import compute_weights

    model = tiny_model("qwen2", "sdpa", seed=1)
    originals = dict(model.named_parameters())
    packed = _packed()
    bf16_model = tiny_model("qwen2", "sdpa", seed=1)  # FSDP2's param_dtype: bf16 parameters, buffers as they are
    for param in bf16_model.parameters():
        param.data = param.data.to(torch.bfloat16)
    with torch.no_grad():
        expected = packed_logprobs(bf16_model, packed)  # [N, T]
    with compute_weights(model, torch.bfloat16):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        logprobs = packed_logprobs(model, packed)  # [N, T], the head's chunks checkpointed
        logprobs.sum().backward()  # recomputation in backward reads the casts too
    torch.testing.assert_close(logprobs.detach(), expected, rtol=0, atol=0)  # the same computation
    assert dict(model.named_parameters()) == originals  # the float32 parameters are back
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in originals.values())
    with torch.no_grad(), compute_weights(model, None):  # float32: nothing is cast
        assert {p.dtype for p in model.parameters()} == {torch.float32}
