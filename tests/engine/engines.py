"""Helpers shared by the engine tests (fixtures: ``conftest.py``)."""

from __future__ import annotations

import torch


def load_hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def small_vllm_engine(path, **settings):
    """An in-process vLLM engine on ``path`` with a 0.25 GiB KV cache (CPU, float32, eager)."""
    from anytime_reasoner.engine.vllm import VLLMSettings, create_engine

    return create_engine(str(path), VLLMSettings(enforce_eager=True, kv_cache_gib=0.25, **settings), device="cpu")
