"""The server on vLLM's engine (``engine.backend=vllm``: ``AsyncLLM``), run in CI's vLLM environment
(vLLM's CPU build) on the embedded model: the openai client, the anytime stream, per-request seeds,
and an abort on disconnect. Skipped where vLLM is not installed."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.serve.conftest import QUESTION, anytime_body, post, serving, sse_events

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


def test_the_server_on_vllm(embedded_model):
    """One server (its start is ~20 s of vLLM's; a module fixture would start it once per xdist
    worker its tests were dealt to), three checks."""
    overrides = ("summary_max_tokens=16", "engine.backend=vllm", "engine.enforce_eager=true", "engine.kv_cache_gib=0.25")
    with serving(embedded_model, *overrides) as (url, state):
        assert state.backend.name == "vllm"
        _chat_enforces_the_thinking_budget(url)
        _anytime_answers_every_budget_and_honours_seeds(url, state)
        _a_disconnected_stream_is_aborted(url, state)


def _chat_enforces_the_thinking_budget(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    cut = client.chat.completions.create(model="tiny", messages=messages, temperature=0, extra_body={"thinking_token_budget": 10})
    assert cut.usage.completion_tokens_details.reasoning_tokens == 10
    free = client.chat.completions.create(model="tiny", messages=messages, temperature=0)
    assert free.choices[0].message.content == "**Final Answer**\n\\boxed{45}"
    assert free.choices[0].message.model_extra["reasoning"].startswith("a=45")


def _anytime_answers_every_budget_and_honours_seeds(url, state):
    with httpx.stream("POST", url + "/v1/anytime", json=anytime_body("12:60:12", seed=3), timeout=60) as resp:
        events = list(sse_events(resp.iter_lines()))
    answers = {d["budget"]: d for k, d in events if k == "answer"}
    assert sorted(answers) == [12, 24, 36, 48, 60] and events[-1][0] == "done"
    again = post(url, "/v1/anytime", anytime_body("12:60:12", seed=3, stream=False)).json()
    same = [(a["budget"], a["answer"], a["summary"], a["thinking_tokens"]) for a in again["answers"]]
    assert same == [(b, answers[b]["answer"], answers[b]["summary"], answers[b]["thinking_tokens"]) for b in sorted(answers)]
    assert state.backend.running() == 0


def _a_disconnected_stream_is_aborted(url, state):
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "temperature": 2.0, "thinking_token_budget": 900}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as resp:
        for n, _ in enumerate(resp.iter_lines()):
            if n >= 10:
                assert state.backend.running() >= 1
                break
    left = time.monotonic()
    while state.backend.running() and time.monotonic() - left < 1.0:
        time.sleep(0.02)
    assert state.backend.running() == 0
