"""LoRA via peft: which tensors train, that the adapted model starts equal to the base, that one
step moves only the adapters, and that the merged export and the adapter folder reproduce it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from anytime_reasoner.errors import UserError
from anytime_reasoner.train.logprobs import sequence_logprobs
from anytime_reasoner.train.lora import (
    DEFAULT_TARGET_MODULES,
    apply_lora,
    export_merged,
    is_lora,
    load_adapter,
    save_adapter,
    trainable_state_dict,
)
from tests.conftest import VOCAB_SIZE, make_tiny_qwen2

pytestmark = pytest.mark.usefixtures("single_thread")

SEED, HIDDEN, LAYERS = 0, 32, 2
RANK, ALPHA = 4, 8.0


def adapted(seed: int = SEED):
    return apply_lora(
        make_tiny_qwen2(seed, hidden=HIDDEN, layers=LAYERS), rank=RANK, alpha=ALPHA, target_modules=DEFAULT_TARGET_MODULES
    )


def random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 rows of 12 random token ids, rows 1 and 2 right-padded after 9 and 5 tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB_SIZE, (3, 12), generator=gen)  # [3, 12]
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    return ids, mask


def stepped(model) -> None:
    """One AdamW step (lr 1e-2) on -sum of the batch's log-probs, over the trainable tensors."""
    ids, mask = random_batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    (-sequence_logprobs(model, ids, mask, chunk_size=8).sum()).backward()
    optimizer.step()


def logprobs(model) -> torch.Tensor:
    ids, mask = random_batch()
    with torch.no_grad():
        return sequence_logprobs(model, ids, mask, chunk_size=8)  # [3, 12]


def test_only_adapter_tensors_train():
    model = adapted()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # 2 layers × 7 target modules (q, k, v, o, gate, up, down) × 2 matrices (lora_A, lora_B) = 28
    assert len(trainable) == LAYERS * len(DEFAULT_TARGET_MODULES) * 2 == 28
    assert all("lora_" in name for name in trainable)
    assert is_lora(model) and not is_lora(make_tiny_qwen2(SEED))
    assert len(trainable_state_dict(model)) == 28
    assert all("lora_" in key for key in trainable_state_dict(model))
    # peft forwards what logprobs.py and the engine use to the base model
    assert type(model.get_decoder()).__name__ == "Qwen2Model"
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    assert model.config.model_type == "qwen2"


def test_adapted_starts_equal_and_one_step_moves_only_adapters():
    base, model = make_tiny_qwen2(SEED, hidden=HIDDEN, layers=LAYERS), adapted()
    # lora_B starts at zero: each layer adds exactly 0.0 to W x, so the log-probs are bit-identical
    assert torch.equal(logprobs(model), logprobs(base))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stepped(model)
    frozen = [name for name in before if "lora_" not in name]
    lora_b = [name for name in before if "lora_B" in name]
    assert len(lora_b) == 14 and len(frozen) == len(before) - 28
    for name, p in model.named_parameters():
        if "lora_B" in name:
            assert not torch.equal(p, before[name]), name
        elif "lora_" not in name:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert not torch.equal(logprobs(model), logprobs(base))


def test_export_merged_reproduces_adapted_model_and_leaves_it_untouched(tmp_path):
    model = adapted()
    stepped(model)
    expected = logprobs(model)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    export_merged(model, tmp_path / "merged")

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in key or "base_layer" in key for key in keys)
    assert "peft" not in (tmp_path / "merged" / "config.json").read_text()
    merged, info = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32, output_loading_info=True)
    assert type(merged) is Qwen2ForCausalLM
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # W' = W + (alpha / r) B A computes W x + (alpha / r) B (A x) up to float32 rounding
    torch.testing.assert_close(logprobs(merged), expected, atol=1e-5, rtol=0)

    # the merge is computed out of place: the training model is bit-identical and still adapted
    assert is_lora(model)
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert torch.equal(logprobs(model), expected)


def test_export_merged_casts_dtype_and_keeps_tied_embeddings_single(tmp_path):
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = Qwen2ForCausalLM(config).eval()
    model = apply_lora(base, rank=RANK, alpha=ALPHA, target_modules=["q_proj"])
    stepped(model)
    export_merged(model, tmp_path / "merged", dtype=torch.bfloat16)

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(key).dtype for key in f.keys()}
        keys = set(f.keys())
    # tied: the embedding is saved once, as embed_tokens, and the head is re-tied on load
    assert dtypes == {torch.bfloat16} and "lm_head.weight" not in keys
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    merged, info = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert merged.dtype == torch.bfloat16 and not info["missing_keys"]
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight


def test_save_and_load_adapter_reproduce_adapted_model(tmp_path):
    model = adapted()
    stepped(model)
    save_adapter(model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}

    resumed = load_adapter(make_tiny_qwen2(SEED, hidden=HIDDEN, layers=LAYERS), tmp_path / "adapter")
    assert torch.equal(logprobs(resumed), logprobs(model))
    assert [n for n, p in resumed.named_parameters() if p.requires_grad] == [
        n for n, p in model.named_parameters() if p.requires_grad
    ]
    frozen = load_adapter(make_tiny_qwen2(SEED, hidden=HIDDEN, layers=LAYERS), tmp_path / "adapter", trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_generate_through_adapter():
    model = adapted()
    stepped(model)
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6) and torch.equal(out[:, :3], prompt)
    # greedy: each new token is the argmax of the adapted model's logits
    with torch.no_grad():
        logits = model(input_ids=out[:, :-1]).logits  # [1, 5, V]
    assert torch.equal(logits[0, 2:].argmax(-1), out[0, 3:])


def test_unknown_target_modules_is_a_user_error():
    with pytest.raises(UserError, match="model.lora_target_modules") as e:
        apply_lora(make_tiny_qwen2(SEED), rank=RANK, alpha=ALPHA, target_modules=["nope"])
    assert "q_proj" in str(e.value) and "lm_head" in str(e.value)
