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


@pytest.fixture(scope="module")
def vllm_server(embedded_model):
    overrides = ("summary_max_tokens=16", "engine.backend=vllm", "engine.enforce_eager=true", "engine.kv_cache_gib=0.25")
    with serving(embedded_model, *overrides) as served:
        yield served


def test_chat_through_vllm_enforces_the_thinking_budget(vllm_server):
    url, state = vllm_server
    assert state.backend.name == "vllm"
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    cut = client.chat.completions.create(model="tiny", messages=messages, temperature=0, extra_body={"thinking_token_budget": 10})
    assert cut.usage.completion_tokens_details.reasoning_tokens == 10
    free = client.chat.completions.create(model="tiny", messages=messages, temperature=0)
    assert free.choices[0].message.content == "**Final Answer**\n\\boxed{45}"
    assert free.choices[0].message.model_extra["reasoning"].startswith("a=45")


def test_anytime_through_vllm_answers_every_budget_and_honours_seeds(vllm_server):
    url, state = vllm_server
    with httpx.stream("POST", url + "/v1/anytime", json=anytime_body("12:60:12", seed=3), timeout=60) as resp:
        events = list(sse_events(resp.iter_lines()))
    answers = {d["budget"]: d for k, d in events if k == "answer"}
    assert sorted(answers) == [12, 24, 36, 48, 60] and events[-1][0] == "done"
    again = post(url, "/v1/anytime", anytime_body("12:60:12", seed=3, stream=False)).json()
    same = [(a["budget"], a["answer"], a["summary"], a["thinking_tokens"]) for a in again["answers"]]
    assert same == [(b, answers[b]["answer"], answers[b]["summary"], answers[b]["thinking_tokens"]) for b in sorted(answers)]
    assert state.backend.running() == 0


def test_a_disconnected_stream_is_aborted_in_vllm(vllm_server):
    url, state = vllm_server
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
