"""The production backend of the server: vLLM's ``AsyncLLM`` (continuous batching, prefix caching:
a summary forked from a thinking's prefix reuses its cached blocks), token ids in and out.

The engine takes the same ``engine.*`` settings as the trainer's and the evaluation's vLLM engine
(``engine.vllm.llm_kwargs``: prefix caching on, no tokenizer, the caller's stop ids), as an
``AsyncEngineArgs``. Each stream is one request with ``RequestOutputKind.DELTA`` outputs and its
own ``seed`` when the request gives one; closing a stream early aborts its request.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from anytime_reasoner.config.serve import ServeConfig
from anytime_reasoner.engine.vllm import NOT_INSTALLED, VLLMSettings, llm_kwargs
from anytime_reasoner.errors import UserError
from anytime_reasoner.serve.backends import GREEDY_BELOW, Delta, Sampling


@dataclass
class VLLMBackend:
    engine: Any  # vllm.v1.engine.async_llm.AsyncLLM (None once closed)
    name: str = "vllm"

    @classmethod
    def start(cls, model_path: str, cfg: ServeConfig, device: str) -> VLLMBackend:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs  # optional: the [vllm] extra
            from vllm.v1.engine.async_llm import AsyncLLM  # (as above)
        except ImportError:
            raise UserError(NOT_INSTALLED) from None
        knobs = {**cfg.engine.vllm_knobs(), "sleep": False}  # never asleep
        settings = VLLMSettings(dtype=cfg.dtype, seed=cfg.seed, **knobs)
        kwargs = llm_kwargs(model_path, settings, device=device, distributed=False)
        return cls(AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs)))

    async def stream(self, prompt_ids: Sequence[int], sampling: Sampling) -> AsyncIterator[Delta]:
        import vllm  # optional: the [vllm] extra
        from vllm.inputs import TokensPrompt  # (as above)
        from vllm.sampling_params import RequestOutputKind  # (as above)

        greedy = sampling.temperature < GREEDY_BELOW
        params = vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop_token_ids=list(sampling.stop_ids),
            seed=sampling.seed,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"seq-{uuid.uuid4().hex}"
        finished = False
        tokens: list[int] = []
        try:
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params, request_id):
                completion = out.outputs[0]
                new = list(completion.token_ids)
                tokens += new
                finished = out.finished
                reason = None
                if finished:
                    reason = "stop" if tokens and tokens[-1] in sampling.stop_ids else "length"
                yield Delta(new, finished, reason)
        finally:
            if not finished:
                await self.engine.abort(request_id)

    def running(self) -> int:
        return int(self.engine.get_num_unfinished_requests())

    async def close(self) -> None:
        self.engine.shutdown()
        self.engine = None  # collected now, while vLLM's modules are alive (its __del__ shuts down again)
        gc.collect()
