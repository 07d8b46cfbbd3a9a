"""``engine.*``: the generation backend's keys, shared by ``train``, ``eval``, ``ask``, ``demo`` and
``compare``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from anytime_reasoner.config.base import StrictModel


class EngineConfig(StrictModel):
    """The generation backend (``engine.*``): transformers ``generate`` or vLLM (``engine.vllm``)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf: transformers generate; vllm: needs the [vllm] extra")
    held_cache_gib: float = Field(
        2.0,
        ge=0.0,
        description="hf: KV cache the thinking call keeps so the summaries fork from it (GiB; past it they are "
        "encoded again; 0: never kept)",
    )
    block_size: int | None = Field(
        None, ge=16, multiple_of=16, description="vllm: KV block (tokens); prefix caching reuses whole blocks (default 32 on CPU)"
    )
    kv_cache_gib: float | None = Field(
        None, gt=0.0, description="vllm: KV cache size (default: 1 on CPU; on GPU the memory share)"
    )
    gpu_memory_utilization: float = Field(0.4, gt=0.0, le=1.0, description="vllm: GPU memory share (weights + KV cache)")
    enforce_eager: bool = Field(False, description="vllm: no CUDA graphs / compilation (faster start, slower decode)")
    max_model_len: int | None = Field(None, ge=16, description="vllm: longest sequence (default: the model's context)")
    max_num_seqs: int | None = Field(None, ge=1, description="vllm: sequences decoded at once (default: vLLM's)")
    sleep: bool = Field(True, description="vllm on GPU: discard the KV cache and the weights while training (reloaded each sync)")
    seed_requests: bool = Field(
        True,
        description="vllm: seed every request from the run's streams (reproducible samples; vLLM's per-sequence sampling "
        "path, slower with thousands of sequences); false: vLLM's fused sampler, unseeded",
    )

    def vllm_knobs(self) -> dict[str, Any]:
        """The vLLM engine's keys by name (``VLLMSettings``'s): all but the backend and the hf keys."""
        return self.model_dump(exclude={"backend", "held_cache_gib"})
