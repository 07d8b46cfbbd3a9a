"""A model whose generation config lists two EOS ids: the codec built for it carries both, and the
transformers engine stops a thinking on the second one (as vLLM, which applies the generation config)."""

from __future__ import annotations

import json

import torch

from anytime_reasoner.config import EngineConfig
from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.models.engines import load_for_inference
from anytime_reasoner.models.loading import generation_eos_ids
from anytime_reasoner.protocol import AnytimeProtocol
from tests.conftest import EOS, make_tiny_qwen2, make_tokenizer

SECOND_EOS = 260  # <|user|> in the test tokenizer, listed as an EOS id by the generation config


def _model_with_two_eos(path):
    model = make_tiny_qwen2(seed=3)
    model.generation_config.eos_token_id = [EOS, SECOND_EOS]
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return model


def test_the_codec_of_a_model_with_two_eos_ids_stops_on_both(tmp_path):
    _model_with_two_eos(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == [EOS, SECOND_EOS]
    assert generation_eos_ids(str(tmp_path)) == (EOS, SECOND_EOS)
    loaded = load_for_inference(str(tmp_path), None, "float32", "cpu", AnytimeProtocol(), EngineConfig())
    assert loaded.codec.eos_id == EOS and loaded.codec.eos_ids == (EOS, SECOND_EOS)
    # the engine stops a sampled stream on the second id: the head's logits favour it by 100
    hook = loaded.model.lm_head.register_forward_hook(
        lambda module, inputs, logits: logits.index_fill(-1, torch.tensor([SECOND_EOS]), 100.0)
    )
    params = SamplingParams(
        max_new_tokens=8, temperature=1.0, stop_token_ids=(loaded.codec.think_end_id, *loaded.codec.eos_ids), seed=0
    )
    (completion,) = loaded.engine.sample([[1, 2, 3]], 1, params)[0]
    hook.remove()
    assert completion.finish_reason == "stop" and completion.token_ids == (SECOND_EOS,)


def test_without_a_generation_config_only_the_tokenizer_eos(tmp_path):
    assert generation_eos_ids(str(tmp_path)) == ()
