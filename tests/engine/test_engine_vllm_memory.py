"""The vLLM engine's memory and cache protocol on GPU, against a stand-in for ``vllm.LLM`` that
records the calls (vLLM's sleep mode needs CUDA; the calls themselves are vLLM's public API):
level-2 sleep while training, weights woken alone for the reload, the trainer's cached blocks freed
first, a refused prefix-cache reset an error, requests seeded only when asked."""

from __future__ import annotations

import pytest
import torch

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.vllm import VLLMEngine, VLLMSettings


class RecordingLLM:
    """The parts of ``vllm.LLM`` the engine calls, each call appended to ``calls``."""

    def __init__(self, calls: list[str], reset_ok: bool = True) -> None:
        self.calls = calls
        self.reset_ok = reset_ok

    def sleep(self, level: int) -> None:
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(f"wake_up({tags})" if tags else "wake_up()")

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        names = [name for name, _ in kwargs["weights_iterator"]]
        self.calls.append(f"{method}({','.join(names)})")

    def reset_prefix_cache(self) -> bool:
        self.calls.append("reset_prefix_cache")
        return self.reset_ok


@pytest.fixture
def on_gpu(monkeypatch):
    """As if on a CUDA machine: ``is_available`` true, the cache-freeing calls recorded."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    return calls


def test_sleep_discards_weights_and_a_sync_wakes_them_alone_first(on_gpu):
    calls = on_gpu
    engine = VLLMEngine(RecordingLLM(calls), VLLMSettings())
    engine.sleep()
    engine.load_weights([("w", torch.zeros(1))])
    assert calls == [
        "sleep(2)",  # weights and KV cache discarded: the full state dict is reloaded anyway
        "empty_cache",  # the trainer's cached blocks back to the device before vLLM allocates
        "wake_up(['weights'])",  # only the weights' memory while they reload
        "reload_weights(w)",
        "empty_cache",
        "wake_up()",  # then the KV cache
        "reset_prefix_cache",
    ]
    assert not engine.asleep and not engine.weights_stale


def test_sampling_with_discarded_weights_is_an_error(on_gpu):
    engine = VLLMEngine(RecordingLLM(on_gpu), VLLMSettings())
    engine.sleep()
    with pytest.raises(RuntimeError, match="discarded by sleep and not reloaded"):
        engine.sample([[1, 2]], 1, SamplingParams(max_new_tokens=2))


def test_a_refused_prefix_cache_reset_is_an_error(on_gpu):
    engine = VLLMEngine(RecordingLLM(on_gpu, reset_ok=False), VLLMSettings())
    with pytest.raises(RuntimeError, match="reset_prefix_cache"):
        engine.load_weights([("w", torch.zeros(1))])


def test_on_cpu_sleep_is_a_no_op():
    calls: list[str] = []
    engine = VLLMEngine(RecordingLLM(calls), VLLMSettings())
    if torch.cuda.is_available():
        pytest.skip("a CPU machine's behaviour")
    engine.sleep()
    engine.load_weights([("w", torch.zeros(1))])
    assert calls == ["reload_weights(w)", "reset_prefix_cache"]


def test_requests_are_seeded_only_when_asked(monkeypatch):
    seen: list[int | None] = []

    class Outputs:
        outputs: list = []

    class SamplingLLM(RecordingLLM):
        def generate(self, prompts, sampling, use_tqdm):
            return [Outputs() for _ in prompts]

    monkeypatch.setattr(
        "anytime_reasoner.engine.vllm.vllm_sampling_params", lambda params, n, seed: seen.append(seed) or object()
    )
    monkeypatch.setitem(__import__("sys").modules, "vllm.inputs", type("M", (), {"TokensPrompt": dict}))
    params = SamplingParams(max_new_tokens=2, seed=7)
    VLLMEngine(SamplingLLM([]), VLLMSettings()).sample([[1], [2]], 1, params)
    VLLMEngine(SamplingLLM([]), VLLMSettings(seed_requests=False)).sample([[1], [2]], 1, params)
    seeded, unseeded = seen[:2], seen[2:]
    assert all(isinstance(s, int) for s in seeded) and seeded[0] != seeded[1]  # derive_seed(7, i) per prefix
    assert unseeded == [None, None]  # vLLM's fused sampler
