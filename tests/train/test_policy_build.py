"""The training-side wrappers of a model: activation checkpointing, the chunked output head, and
LoRA through the trainer (adapters only train, checkpoint and resume; the export is merged)."""

import pytest
import torch
from rollout_cases import make_rollouts, random_advantages, tiny_model

from anytime_reasoner.train.fsdp import decoder_layers, enable_activation_checkpointing
from anytime_reasoner.train.logprobs import packed_logprobs
from anytime_reasoner.train.packing import pack_rollouts
from anytime_reasoner.train.update import _Tally, accumulate_gradients, compute_old_logprobs

pytestmark = pytest.mark.usefixtures("single_thread")


def _packed(seed=3):
    batch = make_rollouts([[6, 8], [5, 7]], (4, 8), n_summary=2, seed=seed)
    return pack_rollouts(batch, *random_advantages(batch, seed=1))


def _gradients(model, packed):
    model.train()
    model.zero_grad(set_to_none=True)
    old = compute_old_logprobs(model, packed, max_token_len=10_000) - 0.1 * packed.trainable_mask
    accumulate_gradients(model, packed, old, normalizer=100.0, clip_eps=0.2, max_token_len=10_000, tally=_Tally())
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_activation_checkpointing_recomputes_layers_and_keeps_gradients():
    packed = _packed()
    plain = _gradients(tiny_model("qwen2", "sdpa", seed=1), packed)
    model = tiny_model("qwen2", "sdpa", seed=1)
    enable_activation_checkpointing(model)
    calls = []
    # transformers checkpoints a layer's forward (module hooks, FSDP2's included, stay outside), so
    # count a module inside it: its forward runs in the old-logprob pass (no grad), in the forward,
    # and again when backward recomputes the layer
    decoder_layers(model)[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    checkpointed = _gradients(model, packed)
    assert len(calls) == 3
    for k, g in plain.items():
        torch.testing.assert_close(checkpointed[k], g, rtol=0, atol=1e-6, msg=k)


def test_output_head_sees_at_most_chunk_size_tokens():
    model = tiny_model("qwen2", "sdpa", seed=1)
    packed = _packed()
    rows = []
    model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    n_tokens = int(packed.trainable_mask.sum())
    with torch.no_grad():
        packed_logprobs(model, packed, chunk_size=8)
    assert n_tokens > 8 and max(rows) <= 8 and sum(rows) == n_tokens  # [≤ 8, V] logits per call, never [M, V]


@pytest.mark.slow
def test_lora_trains_only_adapters_checkpoints_them_and_exports_merged(tiny_model_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from anytime_reasoner.train.checkpoint import latest_checkpoint
    from anytime_reasoner.train.lora import merged_state_dict
    from tests.train.test_trainer_smoke import _build, _config

    lora = {"model.lora_rank": 4, "model.lora_alpha": 8, "trainer.val_every": 0}
    trainer = _build(_config(tiny_model_dir, tmp_path / "lora", steps=2, **lora))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.fit()
    finally:
        trainer.verifier.close()
    after = trainer.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all("lora_" in k for k in changed)  # only adapter tensors moved
    assert all(torch.equal(after[k], before[k]) for k in after if "lora_" not in k)

    ckpt = latest_checkpoint(tmp_path / "lora")
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    with safe_open(str(ckpt / "adapter_model.safetensors"), "pt") as f:
        assert f.keys() and all("lora_" in k for k in f.keys())

    final = tmp_path / "lora" / "final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(final).eval()
    reference = merged_state_dict(trainer.model)
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0, msg=k)
    batch = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    with torch.no_grad():
        adapted = torch.log_softmax(trainer.model(input_ids=batch).logits, -1)  # [2, 12, V]
        plain = torch.log_softmax(merged(input_ids=batch).logits, -1)  # [2, 12, V]
    torch.testing.assert_close(plain, adapted, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_lora_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from tests.train.test_trainer_smoke import _build, _config

    def fit(out, steps):
        trainer = _build(_config(tiny_model_dir, out, steps=steps, **{"model.lora_rank": 4, "trainer.val_every": 0}))
        try:
            trainer.fit()
        finally:
            trainer.verifier.close()
        return trainer

    straight = fit(tmp_path / "straight", 2)
    fit(tmp_path / "resumed", 1)
    resumed = fit(tmp_path / "resumed", 2)
    assert resumed.start_step == 1
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
