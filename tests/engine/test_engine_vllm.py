"""VLLMEngine beyond the contract: weight sync after an update (plain and LoRA), the stale prefix
cache that a sync without ``reset_prefix_cache`` would leave, global generators left alone, and
the parts that need no vLLM (engine arguments, the head-size and install checks)."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from anytime_reasoner.config import EngineConfig
from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.engine.vllm import VLLMSettings, check_head_size, llm_kwargs
from anytime_reasoner.errors import UserError
from anytime_reasoner.models.engines import check_engine
from anytime_reasoner.train.logprobs import PolicyScorer
from anytime_reasoner.train.weight_sync import policy_weights, sync_engine
from tests.conftest import PAD
from tests.engine.engines import load_hf, small_vllm_engine

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")
# four prefixes of 70 tokens: two full 32-token blocks each are cached after a first request
LONG = [[(11 * i + 3 * j) % 250 for j in range(70)] for i in range(4)]
GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0)


def greedy(engine, prefixes=LONG):
    return [per[0].token_ids for per in engine.sample(prefixes, 1, GREEDY)]


def perturb(model, scale=0.5, seed=0):
    """An 'update' that changes the weights (and so the greedy continuations)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp_min(1e-3))


@pytest.fixture
def synced(wide_model_dir):
    """A fresh vLLM engine and the transformers model it started from."""
    return small_vllm_engine(wide_model_dir), load_hf(wide_model_dir)


@needs_vllm
def test_weight_sync_makes_the_engine_follow_the_trained_model(synced):
    engine, model = synced
    hf = TransformersEngine(model, pad_token_id=PAD)
    before = greedy(engine)  # also fills the prefix cache with the old weights' keys and values
    assert before == greedy(hf)
    perturb(model)
    assert sync_engine(engine, PolicyScorer(model), torch.float32)
    after = greedy(engine)
    assert after == greedy(hf)  # the updated model's continuations, every prefix
    assert after != before  # the update did change them
    assert engine.stats.weight_syncs == 1


@needs_vllm
def test_without_the_prefix_cache_reset_old_keys_and_values_are_reused(synced):
    """Why ``load_weights`` resets the prefix cache: reloading alone leaves blocks computed by the
    old weights in the cache, and the next request on the same prefix reads them."""
    engine, model = synced
    greedy(engine)  # cache the prefixes' blocks
    perturb(model)
    hf_after = greedy(TransformersEngine(model, pad_token_id=PAD))
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(model.state_dict().items())})
    stale = greedy(engine)
    assert stale != hf_after  # mixed old/new keys and values: not the updated model's output
    engine.llm.reset_prefix_cache()
    assert greedy(engine) == hf_after


@needs_vllm
def test_lora_weights_reach_the_engine_merged(synced):
    from anytime_reasoner.train.lora import apply_lora

    engine, model = synced
    peft_model = apply_lora(model, rank=4, alpha=8.0, target_modules=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():  # an adapter that changes the outputs (B is zero at initialization)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    names = {name for name, _ in policy_weights(PolicyScorer(peft_model), torch.float32)}
    assert not any("lora_" in n or "base_layer" in n for n in names)  # plain model names only
    sync_engine(engine, PolicyScorer(peft_model), torch.float32)
    assert greedy(engine) == greedy(TransformersEngine(peft_model, pad_token_id=PAD))


@needs_vllm
def test_creating_an_engine_leaves_global_generators_alone(wide_model_dir):
    import numpy as np

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    small_vllm_engine(wide_model_dir, seed=123)  # vllm.LLM(seed=123) reseeds all three
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_engine_arguments():
    cpu = llm_kwargs("m", VLLMSettings(), device="cpu", distributed=False)
    assert cpu["block_size"] == 32 and cpu["kv_cache_memory_bytes"] == 2**30  # CPU defaults: 32-token blocks, 1 GiB
    assert cpu["enable_prefix_caching"] and cpu["logprobs_mode"] == "processed_logprobs"
    assert cpu["generation_config"] == "vllm" and cpu["skip_tokenizer_init"] and "gpu_memory_utilization" not in cpu
    assert cpu["enable_chunked_prefill"] is False  # vLLM 0.32 cannot rewind a seeded CPU generator after a partial prefill
    gpu = llm_kwargs("m", VLLMSettings(gpu_memory_utilization=0.3, kv_cache_gib=2.0), device="cuda", distributed=True)
    assert gpu["gpu_memory_utilization"] == 0.3 and gpu["enable_sleep_mode"] and "block_size" not in gpu
    assert gpu["kv_cache_memory_bytes"] == 2 * 2**30
    assert gpu["distributed_executor_backend"] == "external_launcher" and gpu["tensor_parallel_size"] == 1


def test_head_sizes_vllm_cannot_run_on_cpu_are_one_line(tiny_model):
    # the test model: hidden 32 over 4 heads = heads of 8
    with pytest.raises(
        UserError, match=r"^engine.backend: vLLM's CPU attention has no kernel for head size 8 .*engine.backend=hf$"
    ):
        check_head_size(tiny_model.config, "cpu")
    check_head_size(tiny_model.config, "cuda")  # GPU kernels: vLLM itself decides


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_asking_for_vllm_without_it_is_one_line(tiny_model):
    with pytest.raises(UserError, match=r"^engine.backend: vllm is not installed; install the \[vllm\] extra"):
        check_engine(EngineConfig(backend="vllm"), tiny_model.config, "cpu")
    check_engine(EngineConfig(), tiny_model.config, "cpu")  # hf: nothing to check
