"""Nothing is executed or unpickled from a model folder: pickled weights and custom-code models are
refused with one line naming the key."""

import json

import pytest

from anytime_reasoner.errors import UserError
from anytime_reasoner.models.loading import load_causal_lm
from tests.conftest import make_tiny_qwen2


def test_pickled_weights_are_refused(tmp_path):
    import torch

    model = make_tiny_qwen2()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the pickled format
    with pytest.raises(UserError, match=r"^model.path: cannot load .* as a causal LM") as err:
        load_causal_lm(str(tmp_path), "float32", key="model.path")
    assert "\n" not in str(err.value)


def test_a_model_that_needs_its_own_code_is_refused(tmp_path):
    make_tiny_qwen2().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="sneaky", auto_map={"AutoModelForCausalLM": "modeling_sneaky.SneakyForCausalLM"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_sneaky.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UserError, match=r"^model.path: cannot load"):
        load_causal_lm(str(tmp_path), "float32", key="model.path")
