"""widen_heads: a Qwen2 with heads of 8 becomes a Llama with heads of 32 that gives the same logits
and the same greedy continuations; model_for_engine widens only the bootstrapped tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from anytime_reasoner.config import EngineConfig
from anytime_reasoner.models.engines import model_for_engine
from anytime_reasoner.tasks.widen import head_size, widen_heads
from tests.conftest import PAD, make_tiny_qwen2, make_tokenizer


@pytest.mark.parametrize("tied", [False, True])
def test_widened_model_computes_the_same_logits(tied):
    model = make_tiny_qwen2(seed=3, hidden=32, layers=2)  # 4 heads of 8, kv heads 2, q/k/v biases
    model.config.tie_word_embeddings = tied
    if tied:
        model.tie_weights()
    with torch.no_grad():  # nonzero biases, so their placement is checked too
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.normal_(0, 0.1)
    wide = widen_heads(model, 32)
    assert type(wide).__name__ == "LlamaForCausalLM" and head_size(wide.config) == 32
    # rotary base theta^(32/8): pair j keeps its frequency theta^(-2j/8)
    assert wide.config.rope_parameters["rope_theta"] == pytest.approx(model.config.rope_parameters["rope_theta"] ** 4)
    ids = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, model(ids).logits, atol=2e-5, rtol=1e-5)
        greedy = dict(max_new_tokens=12, do_sample=False, eos_token_id=[], pad_token_id=PAD)
        assert torch.equal(wide.generate(input_ids=ids[:1], **greedy), model.generate(input_ids=ids[:1], **greedy))


def test_narrowing_and_other_models_are_refused():
    model = make_tiny_qwen2(hidden=32)
    with pytest.raises(ValueError, match="head_dim must be even and >= 8"):
        widen_heads(model, 6)


def test_only_the_bootstrapped_model_is_widened_for_vllm_on_cpu(tmp_path):
    base = tmp_path / "tiny-abc"
    make_tiny_qwen2(hidden=96).save_pretrained(base)  # 4 heads of 24, as the embedded model
    make_tokenizer().save_pretrained(base)
    vllm = EngineConfig(backend="vllm")
    assert model_for_engine(str(base), vllm, "cpu") == str(base)  # not a bootstrapped folder
    (base / "bootstrap.json").write_text(json.dumps({"format": 1}))
    assert model_for_engine(str(base), EngineConfig(), "cpu") == str(base)  # hf: as it is
    assert model_for_engine(str(base), vllm, "cuda") == str(base)  # GPU kernels take 24
    wide = model_for_engine(str(base), vllm, "cpu")
    assert wide == str(tmp_path / "tiny-abc-heads32")
    assert json.loads((tmp_path / "tiny-abc-heads32" / "config.json").read_text())["head_dim"] == 32
    assert model_for_engine(str(base), vllm, "cpu") == wide  # made once
