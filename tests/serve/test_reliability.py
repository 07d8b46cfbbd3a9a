"""Bad requests, disconnects, memory over many requests, the API key and the request timeout
(pytest.mark.slow: each loads a model and generates). Each test names the guard it exercises."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import anytime_body, post, serving, sse_events

pytestmark = pytest.mark.slow

CHAT = {"messages": [{"role": "user", "content": "What is 2+3?"}]}


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        ("/v1/anytime", anytime_body([30, 20]), "budgets", "strictly increasing, got 30 then 20"),
        ("/v1/anytime", anytime_body([100_000]), "budgets", "does not fit the model's context of 1024"),
        ("/v1/anytime", anytime_body("1:100000000:1"), "budgets", "more than 10000 budgets"),
        ("/v1/anytime", anytime_body(list(range(1, 100))), "budgets", "99 budgets; allowed: at most 64"),
        ("/v1/anytime", {"messages": [], "budgets": [8]}, "messages", "at least 1 item"),
        ("/v1/anytime", anytime_body([8], question="   "), "messages", "every message is empty"),
        ("/v1/anytime", anytime_body([8], tempreature=0.5), "tempreature", "unknown field"),
        ("/v1/chat/completions", {**CHAT, "n": 9}, "n", "allowed: 1 to 8"),
        ("/v1/chat/completions", {**CHAT, "thinking_token_budget": 5000}, "thinking_token_budget", "does not fit"),
        ("/v1/chat/completions", {**CHAT, "top_p": 0}, "top_p", "greater than 0"),
        ("/v1/chat/completions", {**CHAT, "model": "gpt-4"}, "model", "unknown 'gpt-4'; allowed: tiny"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(embedded, path, body, param, says):
    url, state = embedded
    out = post(url, path, body)
    assert 400 <= out.status_code < 500, out.text
    error = out.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert state.backend.running() == 0 and not state.sessions


def test_an_oversized_body_is_refused_before_it_is_parsed(embedded):
    url, _ = embedded
    huge = anytime_body([8], question="x" * 1_200_000)  # max_body_bytes: 1,000,000
    out = post(url, "/v1/anytime", huge)
    assert out.status_code == 413 and out.json()["error"]["param"] == "body"


def test_a_client_that_disconnects_has_its_sequences_aborted(random_model):
    # guard: the stream's finally closes the session, which aborts its sequences in the engine;
    # without it the 3000-token thinking would decode for seconds after the client left
    with serving(random_model, "summary_max_tokens=8") as (url, state):
        with httpx.stream("POST", url + "/v1/anytime", json=anytime_body([10, 3000]), timeout=60) as resp:
            for kind, data in sse_events(resp.iter_lines()):
                if kind == "thinking" and data["tokens"] >= 20:
                    assert state.backend.running() >= 1
                    break
        left = time.monotonic()
        while state.backend.running() and time.monotonic() - left < 1.0:
            time.sleep(0.02)
        assert state.backend.running() == 0, "sequences still decoding 1 s after the client left"
        assert not state.sessions


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc (Linux)")
def test_a_thousand_requests_leave_memory_where_it_settled(embedded):
    # guard: sessions and engine requests are dropped when each request ends (16 clients at a time)
    url, state = embedded

    def one(i: int) -> int:
        if i % 2:
            return client.post("/v1/anytime", json=anytime_body([4, 8], stream=False)).status_code
        return client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 12}).status_code

    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(100))) == {200}
        settled = _rss_kib()
        assert set(pool.map(one, range(100, 1000))) == {200}
    after = _rss_kib()
    assert after <= settled * 1.10, (settled, after)
    assert state.backend.running() == 0 and not state.sessions


def test_the_api_key_guards_every_endpoint_but_health(random_model):
    with serving(random_model, "api_key=s3cret") as (url, _):
        for method, path in [("GET", "/v1/models"), ("GET", "/"), ("POST", "/v1/chat/completions"), ("POST", "/v1/anytime")]:
            out = httpx.request(method, url + path, json=CHAT if method == "POST" else None)
            assert out.status_code == 401 and out.json()["error"]["type"] == "authentication_error", path
            wrong = httpx.request(
                method, url + path, headers={"Authorization": "Bearer nope"}, json=CHAT if method == "POST" else None
            )
            assert wrong.status_code == 401, path
        assert httpx.get(url + "/health").status_code == 200
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(url + "/v1/models", headers=good).status_code == 200
        assert (
            httpx.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 12}, headers=good, timeout=60).status_code == 200
        )


def test_a_request_past_the_timeout_is_cancelled_and_reported(random_model):
    with serving(random_model, "request_timeout=0.5", "summary_max_tokens=8") as (url, state):
        start = time.monotonic()
        with httpx.stream("POST", url + "/v1/anytime", json=anytime_body([3000]), timeout=60) as resp:
            events = list(sse_events(resp.iter_lines()))
        assert events[-1][0] == "error" and "request_timeout" in events[-1][1]["message"]
        assert time.monotonic() - start < 5
        out = post(url, "/v1/anytime", anytime_body([3000], stream=False))
        assert out.status_code == 504 and out.json()["error"]["param"] == "request_timeout"
        chat = post(url, "/v1/chat/completions", {**CHAT, "thinking_token_budget": 3000})
        assert chat.status_code == 504
        deadline = time.monotonic() + 1.0
        while state.backend.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.backend.running() == 0 and not state.sessions
