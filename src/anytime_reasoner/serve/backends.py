"""Token streams for the server: one interface, an engine per backend.

:class:`StreamingBackend` is what the server needs of an engine: sample one continuation of a
prompt and hand its tokens over as they are decoded (:class:`Delta`), many sequences at once, and
abort a sequence whose consumer went away. Two engines implement it:

- :class:`HFBackend`: transformers' continuous batching (``ContinuousBatchingManager``: one
  background thread decodes every running sequence in one batched forward per step, with a paged
  KV cache shared by all of them). The CPU / development backend, and the one the tests run.
- ``serve.vllm_backend.VLLMBackend``: vLLM's ``AsyncLLM`` (continuous batching, prefix caching),
  the production backend.

Departure from the OpenAI API: ``seed`` is honoured per request by vLLM only. The transformers
engine samples every sequence from one generator seeded at start (``serve.seed``), so its samples
depend on which requests run together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

GREEDY_BELOW = 1e-5  # a temperature under this samples greedily


@dataclass(frozen=True)
class Sampling:
    """How to sample one continuation."""

    max_tokens: int
    temperature: float = 0.6
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()  # the continuation ends on any of these (kept as its last token)
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """Tokens decoded since the last delta of one sequence."""

    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop" (ended on a stop id, the last token) or "length"


class BackendError(RuntimeError):
    """The engine failed on a sequence; the message says why."""


class StreamingBackend(Protocol):
    name: str

    def stream(self, prompt_ids: Sequence[int], sampling: Sampling) -> AsyncIterator[Delta]:
        """The continuation of ``prompt_ids``, delta by delta; closing the iterator early aborts it."""
        ...

    def running(self) -> int:
        """Sequences the engine holds now (running or waiting)."""
        ...

    async def close(self) -> None: ...


@dataclass
class HFBackend:
    """transformers' continuous batching over one loaded model (see the module docstring)."""

    model: Any  # a transformers causal LM, eval mode, on its device
    eos_ids: tuple[int, ...]
    kv_cache_tokens: int = 65536
    max_batch_tokens: int = 4096
    seed: int = 0
    page_size: int = 64
    name: str = "hf"
    _manager: Any = field(default=None, init=False, repr=False)
    _live: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import GenerationConfig  # heavy: loaded when an engine starts
        from transformers.generation.configuration_utils import ContinuousBatchingConfig  # (as above)

        # Defaults away from 1 so that the per-request temperature, top-p and top-k processors exist
        # (the engine builds none for a neutral default); every request passes its own values.
        generation = GenerationConfig(
            do_sample=True, temperature=0.5, top_p=0.5, top_k=self.model.config.vocab_size, eos_token_id=list(self.eos_ids)
        )
        blocks = -(-self.kv_cache_tokens // self.page_size)
        batching = ContinuousBatchingConfig(
            num_blocks=blocks,
            page_size=self.page_size,
            max_batch_tokens=self.max_batch_tokens,
            per_request_processors=True,
            seed=self.seed,
        )
        self._manager = self.model.init_continuous_batching(generation_config=generation, continuous_batching_config=batching)
        self._manager.start()

    async def stream(self, prompt_ids: Sequence[int], sampling: Sampling) -> AsyncIterator[Delta]:
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        request_id = f"seq-{uuid.uuid4().hex}"
        self._manager.register_result_handler(request_id, outputs.put_nowait)
        greedy = sampling.temperature < GREEDY_BELOW
        knobs: dict[str, Any] = {
            "temperature": 1.0 if greedy else float(sampling.temperature),
            "top_p": float(sampling.top_p),
            "top_k": 1 if greedy else int(self.model.config.vocab_size),
        }
        self._live.add(request_id)
        self._manager.add_request(
            list(prompt_ids),
            request_id=request_id,
            max_new_tokens=sampling.max_tokens,
            streaming=True,
            eos_token_id=list(sampling.stop_ids) or -1,
            **knobs,
        )
        seen, finished = 0, False
        try:
            while not finished:
                out = await outputs.get()
                if out.error:
                    raise BackendError(f"engine: {out.error}")
                tokens = list(out.generated_tokens)
                finished = out.is_finished()
                reason = None
                if finished:
                    reason = "stop" if tokens and tokens[-1] in sampling.stop_ids else "length"
                yield Delta(tokens[seen:], finished, reason)
                seen = len(tokens)
        finally:
            if not finished:
                self._manager.cancel_request(request_id)
            self._live.discard(request_id)

    def running(self) -> int:
        scheduler = getattr(getattr(self._manager, "batch_processor", None), "scheduler", None)
        if scheduler is None:
            return len(self._live)
        return len(scheduler.active_requests) + len(scheduler.waiting_requests)

    async def close(self) -> None:
        await asyncio.to_thread(self._manager.stop, True)
