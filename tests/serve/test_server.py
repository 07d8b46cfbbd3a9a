"""The server end to end on the embedded model: the openai client, curl -N, the anytime endpoint,
answer-now (pytest.mark.slow: loads a model and generates)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import openai
import pytest

from tests.serve.conftest import QUESTION, anytime_body, post, serving, sse_events

pytestmark = pytest.mark.slow


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_models_and_health(embedded):
    url, _ = embedded
    assert [m.id for m in _client(url).models.list().data] == ["tiny"]
    assert httpx.get(url + "/health").json() == {"status": "ok", "running": 0, "sessions": 0}


def test_chat_completion_separates_reasoning_and_enforces_the_thinking_budget(embedded):
    url, _ = embedded
    messages = [{"role": "user", "content": QUESTION}]
    out = _client(url).chat.completions.create(model="tiny", messages=messages, extra_body={"thinking_token_budget": 10})
    choice = out.choices[0]
    # the embedded model thinks ~37 tokens on this question: a budget of 10 cuts it, always
    assert out.usage.completion_tokens_details.reasoning_tokens == 10
    assert choice.message.model_extra["reasoning"] and choice.message.content.startswith("**Final Answer**")
    assert out.usage.completion_tokens > 10 and out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    free = _client(url).chat.completions.create(model="tiny", messages=messages, temperature=0)
    assert free.usage.completion_tokens_details.reasoning_tokens > 10  # no budget: the thinking closes itself
    assert "\\boxed{45}" in free.choices[0].message.content  # greedy: the right answer


def test_chat_stream_sends_reasoning_then_content_then_usage(embedded):
    url, _ = embedded
    stream = _client(url).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTION}], stream=True, stream_options={"include_usage": True}
    )
    kinds, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            delta = c.delta.model_extra or {}
            if delta.get("reasoning"):
                kinds.append("reasoning")
            if c.delta.content:
                kinds.append("content")
            finish = c.finish_reason or finish
    assert kinds[0] == "reasoning" and kinds[-1] == "content"
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning")  # no reasoning after content
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0 and finish == "stop"


def test_chat_n_stop_and_max_tokens(embedded):
    url, _ = embedded
    client = _client(url)
    messages = [{"role": "user", "content": QUESTION}]
    three = client.chat.completions.create(model="tiny", messages=messages, n=3)
    assert sorted(c.index for c in three.choices) == [0, 1, 2]
    stopped = client.chat.completions.create(model="tiny", messages=messages, temperature=0, stop=["{"])
    assert stopped.choices[0].message.content == "**Final Answer**\n\\boxed"  # cut before the stop string
    capped = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20)
    assert capped.usage.completion_tokens <= 20


def test_anytime_stream_with_curl_answers_every_budget_from_one_thinking(embedded):
    url, _ = embedded
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps(anytime_body("12:60:12"))
    cmd = ["curl", "-sN", "-X", "POST", url + "/v1/anytime", "-H", "Content-Type: application/json", "--data", body]
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    events = list(sse_events(iter(lines)))
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    answers = {d["budget"]: d for k, d in events if k == "answer"}
    assert sorted(answers) == [12, 24, 36, 48, 60]
    done = events[-1][1]
    length = done["thinking_tokens"]  # one thinking: every answer's cut is min(b, its length)
    assert done["thinking_closed"] and all(a["thinking_tokens"] == min(b, length) for b, a in answers.items())
    assert answers[60]["answer"] == "45" and answers[60]["thinking_done"]
    assert all(a["answered_s"] >= a["reached_s"] for a in answers.values())


def test_anytime_without_streaming_returns_every_answer_in_one_body(embedded):
    url, _ = embedded
    out = post(url, "/v1/anytime", anytime_body([8, 16, 500], stream=False))
    assert out.status_code == 200
    body = out.json()
    assert [a["budget"] for a in body["answers"]] == [8, 16, 500]
    assert [a["thinking_tokens"] for a in body["answers"]][:2] == [8, 16]
    assert body["answers"][2]["thinking_done"] and body["usage"]["reasoning_tokens"] == body["thinking_tokens"]


def test_answer_now_cuts_a_running_thinking(random_model):
    with serving(random_model, "summary_max_tokens=8") as (url, state):
        events, result = [], {}
        with httpx.stream("POST", url + "/v1/anytime", json=anytime_body([2000, 3000]), timeout=60) as resp:
            for kind, data in sse_events(resp.iter_lines()):
                events.append((kind, data))
                if kind == "thinking" and data["tokens"] >= 30 and not result:
                    session_id = events[0][1]["id"]  # asked on a second connection while this one streams
                    result = post(url, f"/v1/anytime/{session_id}/answer", {"stop": True}).json()
        kinds = [k for k, _ in events]
        assert result["thinking_stopped"] and 30 <= result["thinking_tokens"] < 2000 and result["budget"] is None
        assert "answer_now" in kinds and kinds[-1] == "done"
        done = events[-1][1]
        assert done["thinking_tokens"] < 2000  # stopped: both budgets answered where it stood
        assert {a["thinking_tokens"] for a in done["answers"]} == {done["thinking_tokens"]}
        deadline = time.monotonic() + 5
        while state.backend.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.backend.running() == 0


def test_the_serve_command_prints_its_address_and_stops_on_ctrl_c(embedded_model):
    import os
    import signal
    import sys

    cmd = [sys.executable, "-m", "anytime_reasoner", "serve", f"model={embedded_model}", "port=0", "device=cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the server exited before listening"
        url = line.split(" on ", 1)[1].split()[0].rstrip("/")
        assert url.startswith("http://127.0.0.1:")  # 127.0.0.1 unless told otherwise
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
        answer = post(url, "/v1/anytime", anytime_body([8, 16], stream=False)).json()
        assert [a["budget"] for a in answer["answers"]] == [8, 16]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
