"""The generation-engine contract, run against every engine: ScriptedEngine, TransformersEngine and
VLLMEngine (where vLLM is importable; a clean skip otherwise — CI runs it in its vLLM environment).

Every engine: one completion list per prefix with the asked count (per-prefix counts, zeros
included), completions cut through the first stop id (``"stop"``) or at the cap (``"length"``),
and a seeded call that reproduces. Engines with a model also: greedy equals a plain transformers
greedy decode of each prefix alone, and the returned log-probs equal the model's own
``log_softmax(logits / T)`` at the sampled tokens (teacher-forced, float32) within ``LOGPROB_TOL``.

The model is a random Qwen2 with heads of 32 (vLLM's CPU kernels need >= 32), saved to a folder
that vLLM loads and transformers loads too, so both engines sample the same weights.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.engine.scripted import ScriptedEngine
from tests.conftest import EOS, PAD, VOCAB_SIZE
from tests.engine.engines import load_hf, small_vllm_engine

HAS_VLLM = importlib.util.find_spec("vllm") is not None
LOGPROB_TOL = 1e-4  # float32, kernels differ (vLLM's CPU attention vs sdpa): measured <= 4e-6
PREFIXES = [[5, 6, 7, 8, 9, 10, 11], [20], [30, 31, 32], [40] * 37]  # lengths 7, 1, 3, 37
ENGINES = ["scripted", "hf", pytest.param("vllm", marks=pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed"))]


def scripted_stream(prefix: tuple[int, ...], index: int) -> list[int]:
    """A deterministic stream of 64 tokens per (prefix, sample) (any cap up to 64 is honoured)."""
    return [(sum(prefix) * 7 + index * 31 + j * 13) % VOCAB_SIZE for j in range(64)]


@pytest.fixture(scope="module")
def hf_model(wide_model_dir):
    return load_hf(wide_model_dir)


@pytest.fixture(scope="module")
def vllm_engine(wide_model_dir):
    return small_vllm_engine(wide_model_dir)


@pytest.fixture(params=ENGINES)
def engine(request, hf_model):
    if request.param == "scripted":
        return ScriptedEngine(scripted_stream)
    if request.param == "hf":
        return TransformersEngine(hf_model, pad_token_id=PAD)
    return request.getfixturevalue("vllm_engine")


def has_model(engine) -> bool:
    return not isinstance(engine, ScriptedEngine)


def test_counts_per_prefix_and_zero(engine):
    params = SamplingParams(max_new_tokens=5, temperature=1.0, seed=0)
    out = engine.sample(PREFIXES, [2, 0, 3, 1], params)
    assert [len(c) for c in out] == [2, 0, 3, 1]
    out = engine.sample(PREFIXES[:2], 3, params)
    assert [len(c) for c in out] == [3, 3]
    assert engine.sample([], 2, params) == []


def test_stop_ids_and_caps(engine):
    # stopping on half the vocabulary: sampled sequences stop early, some may reach the cap of 9
    stops = tuple(range(0, VOCAB_SIZE, 2))
    out = engine.sample(PREFIXES, 4, SamplingParams(max_new_tokens=9, temperature=1.0, stop_token_ids=stops, seed=3))
    reasons = set()
    for per_prefix in out:
        for c in per_prefix:
            ids = list(c.token_ids)
            assert 1 <= len(ids) <= 9
            assert not any(t in stops for t in ids[:-1]), ids  # nothing sampled past the first stop id
            if c.finish_reason == "stop":
                assert ids[-1] in stops  # the stop token is kept
            else:
                assert c.finish_reason == "length" and len(ids) == 9 and ids[-1] not in stops
            reasons.add(c.finish_reason)
    assert "stop" in reasons


def test_no_stop_ids_runs_to_the_cap(engine):
    out = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=7, temperature=1.0, seed=1))
    assert all(len(c.token_ids) == 7 and c.finish_reason == "length" for per in out for c in per)


def test_seeded_calls_reproduce(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11)
    first = engine.sample(PREFIXES, [2, 1, 2, 2], params)
    again = engine.sample(PREFIXES, [2, 1, 2, 2], params)
    assert [[c.token_ids for c in per] for per in first] == [[c.token_ids for c in per] for per in again]
    if has_model(engine):  # two samples of one prefix differ (a 262-token vocabulary, 8 tokens)
        assert first[0][0].token_ids != first[0][1].token_ids


def reference_greedy(model, prefix: list[int], max_new_tokens: int) -> tuple[int, ...]:
    """Plain transformers greedy decode of one unpadded prefix, no stop ids."""
    out = model.generate(
        input_ids=torch.tensor([prefix]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=[], pad_token_id=PAD
    )
    return tuple(out[0, len(prefix) :].tolist())


def test_greedy_equals_plain_transformers_decode(engine, hf_model):
    if not has_model(engine):
        pytest.skip("a scripted engine has no model")
    out = engine.sample(PREFIXES, 2, SamplingParams(max_new_tokens=12, temperature=0.0))
    for prefix, per_prefix in zip(PREFIXES, out, strict=True):
        expected = reference_greedy(hf_model, prefix, 12)
        assert [c.token_ids for c in per_prefix] == [expected, expected]


def teacher_forced_logprobs(model, prefix: list[int], sampled: tuple[int, ...], temperature: float) -> torch.Tensor:
    """``log_softmax(logits / T)`` of ``model`` at each sampled token, one plain forward. ``[len(sampled)]``"""
    ids = torch.tensor([list(prefix) + list(sampled)])  # [1, P + n]
    with torch.no_grad():
        logits = model(ids).logits[0, len(prefix) - 1 : -1].float()  # [n, V]: position t predicts t + 1
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(sampled)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_logprobs_agree_with_the_model(engine, hf_model, temperature):
    params = SamplingParams(max_new_tokens=10, temperature=temperature, stop_token_ids=(EOS,), seed=5, logprobs=True)
    out = engine.sample(PREFIXES, 2, params)
    if not has_model(engine):
        assert all(c.logprobs is None for per in out for c in per)
        return
    for prefix, per_prefix in zip(PREFIXES, out, strict=True):
        for c in per_prefix:
            assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
            expected = teacher_forced_logprobs(hf_model, prefix, c.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=LOGPROB_TOL, rtol=0)


def test_logprobs_only_when_asked(engine):
    out = engine.sample(PREFIXES[:1], 1, SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))
    assert out[0][0].logprobs is None


def test_a_call_after_a_kept_cache_continues_its_prefixes_as_any_call(engine, hf_model):
    """``keep_cache`` asks an engine to hold the call's KV cache for the next call (the transformers
    engine forks from it; vLLM has its own prefix cache): the next call, on cuts of what was sampled
    plus two inserted tokens, still decodes exactly what a plain greedy decode of each prefix does."""
    if not has_model(engine):
        pytest.skip("a scripted engine has no model")
    first = engine.sample(PREFIXES, 1, SamplingParams(max_new_tokens=8, temperature=0.0, keep_cache=True))
    follow = [list(p) + list(per[0].token_ids[:5]) + [50, 51] for p, per in zip(PREFIXES, first, strict=True)]
    out = engine.sample(follow, 1, SamplingParams(max_new_tokens=6, temperature=0.0))
    for prefix, per_prefix in zip(follow, out, strict=True):
        assert per_prefix[0].token_ids == reference_greedy(hf_model, prefix, 6)
    if isinstance(engine, TransformersEngine):
        assert engine.stats.reused_prefix_tokens == sum(len(p) - 2 for p in follow)  # all but the inserted tokens
