"""scripts/scaling_table.py: the parameter count of the built-in shape and the FSDP2 sharding arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scaling_table.py"


@pytest.fixture(scope="module")
def st():
    spec = importlib.util.spec_from_file_location("scaling_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_r1_distill_1_5b_parameter_count(st):
    # DeepSeek-R1-Distill-Qwen-1.5B: hidden 1536, 28 layers, 12 heads × 128, 2 KV heads (kv_dim 256),
    # intermediate 8960, vocab 151936, untied lm_head.
    #   input embedding            151936·1536                          = 233,373,696
    #   per layer: q   1536·1536 + 1536                                 =   2,360,832
    #              k   1536·256 + 256                                   =     393,472
    #              v   1536·256 + 256                                   =     393,472
    #              o   1536·1536 (no bias)                              =   2,359,296
    #              MLP 3·1536·8960 (gate, up, down)                     =  41,287,680
    #              2 RMSNorms 2·1536                                    =       3,072
    #              layer total                                          =  46,797,824
    #   28 layers                  28·46,797,824                        = 1,310,339,072
    #   final norm                                                      =       1,536
    #   lm_head                    151936·1536                          = 233,373,696
    #   total ≈ 1.78B (the official bf16 model.safetensors: 3.55 GB = 2 bytes × this)
    expected = 233_373_696 + 28 * 46_797_824 + 1_536 + 233_373_696
    assert expected == 1_777_088_000
    shape = st.SHAPES["1.5b"]
    assert shape.layer_params == 46_797_824
    assert shape.params == expected
    assert shape.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2


def test_optimizer_memory_halves_from_one_to_two_gpus(st):
    shape = st.SHAPES["1.5b"]
    one, two = st.state_bytes(shape, 1), st.state_bytes(shape, 2)
    assert one["optimizer"] == 8 * shape.params
    assert two["optimizer"] == one["optimizer"] / 2
    assert two["params"] == one["params"] / 2 and two["grads"] == one["grads"] / 2


def test_recipe_tables_print(st, capsys):
    assert st.main(["--markdown", "--gpus", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "1,777,088,000 parameters" in out
    assert "| fits in 80 GiB, checkpointing on / off |" in out
