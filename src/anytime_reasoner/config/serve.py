"""The schema of ``anytime-reasoner serve`` (:class:`ServeConfig`): the model, sampling and cut-protocol
keys of ``eval``/``ask`` (:class:`GenerationConfig`), where the server listens, and its limits
(docs/SERVING.md)."""

from __future__ import annotations

from pydantic import Field

from anytime_reasoner.config.eval import GenerationConfig
from anytime_reasoner.config.train import EMBEDDED_MODEL


class ServeConfig(GenerationConfig):
    """``anytime-reasoner serve [model=M] [host=127.0.0.1] [port=8000] [engine.backend=hf|vllm] [api_key=K]``."""

    model: str = Field(
        EMBEDDED_MODEL, description="causal LM folder or hub name; 'tiny' = the embedded model (bootstrapped once, cached)"
    )
    temperature: float = Field(0.6, ge=0.0, description="default sampling temperature of a request (0: greedy)")
    seed: int = Field(0, description="hf engine: the seed of its one sampling stream (per-request seeds need vllm)")
    served_model_name: str | None = Field(None, description="the model id of /v1/models and responses (default: model)")
    host: str = Field("127.0.0.1", description="address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0: a free one, printed at start)")
    api_key: str | None = Field(None, description="if set, every endpoint but /health needs 'Authorization: Bearer <key>'")
    max_n: int = Field(8, ge=1, description="largest n (choices) one chat request may ask for")
    max_budgets: int = Field(64, ge=1, description="most budgets one /v1/anytime request may list")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (bytes)")
    request_timeout: float = Field(600.0, gt=0.0, description="seconds a request may run before it is cancelled")
    kv_cache_tokens: int = Field(65536, ge=256, description="hf engine: tokens of paged KV cache shared by all running sequences")
    max_batch_tokens: int = Field(4096, ge=64, description="hf engine: tokens one batched forward may carry")

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model
