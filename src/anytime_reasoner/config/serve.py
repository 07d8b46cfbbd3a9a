"""The schema of ``anytime-reasoner serve`` (:class:`ServeConfig`): the model and its engine, where
the server listens, its limits, and the cut protocol's keys (docs/SERVING.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from anytime_reasoner.config.base import StrictModel, protocol_field
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.protocol import AnytimeProtocol

EMBEDDED = "tiny"


class ServeConfig(StrictModel):
    """``anytime-reasoner serve [model=M] [host=127.0.0.1] [port=8000] [engine.backend=hf|vllm] [api_key=K]``."""

    model: str = Field(
        EMBEDDED, description="causal LM folder or hub name; 'tiny' = the embedded model (bootstrapped once, cached)"
    )
    tokenizer: str | None = Field(None, description="tokenizer path if different from the model's")
    served_model_name: str | None = Field(None, description="the model id of /v1/models and responses (default: model)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: EngineConfig = EngineConfig()
    host: str = Field("127.0.0.1", description="address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0: a free one, printed at start)")
    api_key: str | None = Field(None, description="if set, every endpoint but /health needs 'Authorization: Bearer <key>'")
    temperature: float = Field(0.6, ge=0.0, description="default sampling temperature of a request (0: greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="default nucleus mass of a request")
    max_n: int = Field(8, ge=1, description="largest n (choices) one chat request may ask for")
    max_budgets: int = Field(64, ge=1, description="most budgets one /v1/anytime request may list")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (bytes)")
    request_timeout: float = Field(600.0, gt=0.0, description="seconds a request may run before it is cancelled")
    kv_cache_tokens: int = Field(
        65536, ge=256, description="hf backend: tokens of paged KV cache shared by all running sequences"
    )
    max_batch_tokens: int = Field(4096, ge=64, description="hf backend: tokens one batched forward may carry")
    seed: int = Field(0, description="hf backend: the seed of its one sampling stream (per-request seeds need vllm)")
    summary_max_tokens: int = protocol_field("summary_max_tokens", ge=1)
    think_start: str = protocol_field("think_start")
    think_end: str = protocol_field("think_end")
    cut_marker: str = protocol_field("cut_marker")
    answer_delimiter: str = protocol_field("answer_delimiter")

    def protocol(self) -> AnytimeProtocol:
        """The cut protocol these keys spell."""
        return AnytimeProtocol.from_config(self)

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model
