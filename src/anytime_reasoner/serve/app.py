"""The HTTP server: OpenAI-compatible chat completions, the anytime endpoint, and a web page.

Endpoints (docs/SERVING.md):

- ``POST /v1/chat/completions``: OpenAI's API, streamed or not. The thinking comes back in
  ``reasoning`` (vLLM's field), the answer in ``content``. ``thinking_token_budget`` (vLLM's name)
  cuts the thinking there with the project's forced text and a summary capped at
  ``summary_max_tokens``: always enforced. Usage separates ``reasoning_tokens``.
- ``POST /v1/anytime``: answers at every budget from one thinking, as server-sent events
  (``start``, ``thinking``, ``answer`` per budget, ``answer_now``, ``done``), or one JSON body;
  ``POST /v1/anytime/{id}/answer``: the answer now, at wherever that request's thinking stands.
- ``GET /v1/models``, ``GET /health`` (no key needed), ``GET /`` (the page).

Bad requests get a 4xx with a JSON error naming the field (OpenAI's error shape). Every request is
cancelled past ``request_timeout``; a client that disconnects has its sequences aborted in the
engine. Model output is data: it is sent as JSON and the page only ever sets ``textContent``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from anytime_reasoner.config.serve import ServeConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.protocol import AnytimeProtocol, InsertedIds
from anytime_reasoner.serve.anytime import AnytimeSession
from anytime_reasoner.serve.backends import Sampling, StreamingBackend
from anytime_reasoner.serve.schemas import AnswerNowRequest, AnytimeRequest, ChatMessage, ChatRequest
from anytime_reasoner.serve.text import IncrementalText

PAGE = files("anytime_reasoner") / "serve" / "static" / "index.html"


class ApiError(Exception):
    """A request the server refuses: HTTP status, the field at fault, one line."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(message: str, param: str | None, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


@dataclass
class ServerState:
    """What every request needs: the engine, the tokenizer's codec, the limits; the running
    anytime sessions by id (for answer-now)."""

    cfg: ServeConfig
    backend: StreamingBackend
    codec: TokenizerCodec
    context: int  # the model's context (positions)
    sessions: dict[str, AnytimeSession] = field(default_factory=dict)

    @cached_property
    def protocol(self) -> AnytimeProtocol:
        return self.cfg.protocol()

    @cached_property
    def inserted(self) -> InsertedIds:
        """The protocol's forced ids, encoded once."""
        return self.protocol.inserted_ids(self.codec)

    def prompt(self, messages: list[ChatMessage]) -> list[int]:
        if not any(m.content.strip() for m in messages):
            raise ApiError(400, "messages: every message is empty; allowed: at least one message with content", "messages")
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        return encode_prompt(self.codec.tokenizer, rendered, self.cfg.think_start)

    def forced_tokens(self) -> int:
        return max(len(self.inserted.closed), len(self.inserted.forced)) + self.cfg.summary_max_tokens

    def room(self, prompt: list[int]) -> int:
        """Thinking tokens that fit after ``prompt`` with the forced text and a whole summary."""
        return self.context - len(prompt) - self.forced_tokens()


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="anytime-reasoner", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    _install_guards(app, state.cfg)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "running": state.backend.running(), "sessions": len(state.sessions)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": state.cfg.model_id, "object": "model", "created": 0, "owned_by": "anytime-reasoner"}
        return {"object": "list", "data": [{**card, "max_model_len": state.context}]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> Any:
        return await chat_completions(state, body)

    @app.post("/v1/anytime", response_model=None)
    async def anytime(body: AnytimeRequest) -> Any:
        return await anytime_answers(state, body)

    @app.post("/v1/anytime/{session_id}/answer")
    async def answer_now(session_id: str, body: AnswerNowRequest | None = None) -> dict[str, Any]:
        session = state.sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"id: no running anytime request {session_id!r}", "id", "not_found_error")
        answer = await session.answer_now()
        if body is not None and body.stop:
            session.stop_thinking()
        return {"id": session_id, **answer.as_dict(), "thinking_stopped": bool(body and body.stop)}

    return app


# ---------------------------------------------------------------------- guards


def _install_guards(app: FastAPI, cfg: ServeConfig) -> None:
    """Errors as OpenAI's JSON, the API key, the body size limit."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(error_body(err.message, err.param, err.kind), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid body"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
        param = ".".join(loc) or None
        text = str(first.get("msg")).removeprefix("Value error, ")
        message = f"{param}: {text}" if param else text
        if first.get("type") == "extra_forbidden":
            message = f"{param}: unknown field; see docs/SERVING.md for the fields this endpoint takes"
        return JSONResponse(error_body(message, param, "invalid_request_error"), status_code=400)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        if cfg.api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {cfg.api_key}".encode()):
                body = error_body("authorization: missing or wrong bearer token", "authorization", "authentication_error")
                return JSONResponse(body, status_code=401)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            message = f"body: {length} bytes; allowed: at most {cfg.max_body_bytes} (max_body_bytes)"
            return JSONResponse(error_body(message, "body", "invalid_request_error"), status_code=413)
        if length is None and request.method == "POST":
            return JSONResponse(error_body("body: a Content-Length header is required", "body", "invalid_request_error"), 411)
        return await call_next(request)


def _check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model != state.cfg.model_id:
        raise ApiError(404, f"model: unknown {model!r}; allowed: {state.cfg.model_id}", "model", "not_found_error")


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _with_timeout(stream: AsyncIterator[str], seconds: float, on_timeout: Callable[[], str]) -> AsyncIterator[str]:
    """``stream`` until ``seconds`` have passed; then ``on_timeout()`` and the stream is closed
    (which cancels its sequences)."""
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(anext(stream), timeout=max(left, 0.0))
            except StopAsyncIteration:
                return
            except TimeoutError:
                yield on_timeout()
                return
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def _timeout_message(cfg: ServeConfig) -> str:
    return f"request_timeout: the request ran past {cfg.request_timeout:g} s and was cancelled"


# ---------------------------------------------------------------------- /v1/anytime


async def anytime_answers(state: ServerState, body: AnytimeRequest) -> Any:
    _check_model(state, body.model)
    budgets = [int(b) for b in body.budgets]
    if len(budgets) > state.cfg.max_budgets:
        raise ApiError(400, f"budgets: {len(budgets)} budgets; allowed: at most {state.cfg.max_budgets}", "budgets")
    prompt = state.prompt(body.messages)
    if budgets[-1] > state.room(prompt):
        message = (
            f"budgets: the largest, {budgets[-1]}, does not fit the model's context of {state.context} with the "
            f"{len(prompt)}-token prompt and a {state.forced_tokens()}-token answer; allowed: at most {state.room(prompt)}"
        )
        raise ApiError(400, message, "budgets")
    session = AnytimeSession(
        state.backend,
        state.codec,
        state.protocol,
        prompt,
        budgets,
        temperature=state.cfg.temperature if body.temperature is None else body.temperature,
        top_p=state.cfg.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
    )
    session_id = f"anytime-{uuid.uuid4().hex}"
    events = _anytime_events(state, session_id, session, budgets)
    if body.stream:
        sse = _as_sse(events)
        timed = _with_timeout(sse, state.cfg.request_timeout, lambda: _sse("error", {"message": _timeout_message(state.cfg)}))
        return StreamingResponse(timed, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    result: dict[str, Any] = {}
    try:
        async with asyncio.timeout(state.cfg.request_timeout):
            async for event, data in events:
                if event == "done":
                    result = data
    except TimeoutError:
        raise ApiError(504, _timeout_message(state.cfg), "request_timeout", "timeout_error") from None
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return result


async def _as_sse(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[str]:
    """``(event, data)`` pairs as server-sent events; closing this closes ``events``."""
    try:
        async for event, data in events:
            yield _sse(event, data)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _anytime_events(
    state: ServerState, session_id: str, session: AnytimeSession, budgets: list[int]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The events of one anytime request as ``(event, data)``; the session is reachable by id
    (answer-now) while they run."""
    state.sessions[session_id] = session
    answers: list[dict[str, Any]] = []
    thinking: list[str] = []
    try:
        yield "start", {"id": session_id, "budgets": budgets, "prompt_tokens": len(session.prompt_ids)}
        async for kind, payload in session.events():
            if kind == "thinking":
                thinking.append(payload)
                yield "thinking", {"text": payload, "tokens": len(session.thinking)}
            elif kind in ("answer", "answer_now"):
                if kind == "answer":
                    answers.append(payload.as_dict())
                yield kind, payload.as_dict()
            elif kind == "done":
                usage = session.usage
                summary = {
                    "id": session_id,
                    "budgets": budgets,
                    "answers": sorted(answers, key=lambda a: a["budget"]),
                    "thinking": "".join(thinking),
                    "thinking_tokens": len(session.thinking),
                    "thinking_closed": session.closed,
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "reasoning_tokens": usage.thinking_tokens,
                        "summary_tokens": usage.summary_tokens,
                    },
                }
                yield "done", summary
    finally:
        state.sessions.pop(session_id, None)


# ---------------------------------------------------------------------- /v1/chat/completions


@dataclass
class _Choice:
    index: int
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    reasoning_tokens: int = 0
    content_tokens: int = 0
    finish_reason: str = "stop"


async def chat_completions(state: ServerState, body: ChatRequest) -> Any:
    _check_model(state, body.model)
    if body.n > state.cfg.max_n:
        raise ApiError(400, f"n: {body.n}; allowed: 1 to {state.cfg.max_n} (max_n)", "n")
    prompt = state.prompt(body.messages)
    limit = _thinking_limit(state, body, prompt)
    created = int(time.time())
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    choices = [_Choice(i) for i in range(body.n)]
    merged = _merge([_choice_chunks(state, body, prompt, limit, c) for c in choices])
    if body.stream:
        chunks = _chat_sse(state, body, completion_id, created, prompt, choices, merged)
        return StreamingResponse(
            _with_timeout(chunks, state.cfg.request_timeout, lambda: "data: " + json.dumps(
                error_body(_timeout_message(state.cfg), "request_timeout", "timeout_error")) + "\n\n"),
            media_type="text/event-stream",
        )  # fmt: skip
    try:
        async with asyncio.timeout(state.cfg.request_timeout):
            async for index, kind, text in merged:
                (choices[index].reasoning if kind == "reasoning" else choices[index].content).append(text)
    except TimeoutError:
        raise ApiError(504, _timeout_message(state.cfg), "request_timeout", "timeout_error") from None
    finally:
        await merged.aclose()  # type: ignore[attr-defined]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": state.cfg.model_id,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": "".join(c.content), "reasoning": "".join(c.reasoning)},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in choices
        ],
        "usage": _usage(prompt, choices),
    }


def _usage(prompt: list[int], choices: list[_Choice]) -> dict[str, Any]:
    reasoning = sum(c.reasoning_tokens for c in choices)
    completion = reasoning + sum(c.content_tokens for c in choices)
    return {
        "prompt_tokens": len(prompt),
        "completion_tokens": completion,
        "total_tokens": len(prompt) + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _thinking_limit(state: ServerState, body: ChatRequest, prompt: list[int]) -> int:
    """Thinking tokens allowed: ``thinking_token_budget``, within ``max_tokens`` less a summary,
    within the context."""
    room = state.room(prompt)
    if room < 1:
        raise ApiError(
            400, f"messages: the prompt ({len(prompt)} tokens) leaves no room in the context of {state.context}", "messages"
        )
    limit = room
    cap = body.token_cap()
    if cap is not None:
        limit = min(limit, max(cap - state.cfg.summary_max_tokens, 0))
    if body.thinking_token_budget is not None:
        if body.thinking_token_budget > room:
            message = f"thinking_token_budget: {body.thinking_token_budget} does not fit the context; allowed: at most {room}"
            raise ApiError(400, message, "thinking_token_budget")
        limit = min(limit, body.thinking_token_budget)
    return limit


async def _merge(streams: list[AsyncIterator[tuple[int, str, str]]]) -> AsyncIterator[tuple[int, str, str]]:
    """Items of several streams as they come (n choices decode concurrently)."""
    if len(streams) == 1:
        try:
            async for item in streams[0]:
                yield item
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump(stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await queue.put(item)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        left = len(tasks)
        while left:
            item = await queue.get()
            if item is done:
                left -= 1
            else:
                yield item
        for task in tasks:
            task.result()  # an engine error reaches the caller
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _choice_chunks(
    state: ServerState, body: ChatRequest, prompt: list[int], limit: int, choice: _Choice
) -> AsyncIterator[tuple[int, str, str]]:
    """``(index, "reasoning" | "content", text)`` of one choice: the thinking up to ``limit``, then
    the answer after the protocol's inserted text (forced if the thinking was cut)."""
    codec, cfg = state.codec, state.cfg
    temperature = cfg.temperature if body.temperature is None else body.temperature
    top_p = cfg.top_p if body.top_p is None else body.top_p
    seed = None if body.seed is None else body.seed + choice.index
    stops = (codec.think_end_id, *codec.eos_ids)
    thinking: list[int] = []
    reasoning = IncrementalText(codec.decode, frozenset(stops))
    if limit > 0:
        async for delta in state.backend.stream(prompt, Sampling(limit, temperature, top_p, stops, seed)):
            thinking += delta.token_ids
            shown = reasoning.push(delta.token_ids)
            if shown:
                yield choice.index, "reasoning", shown
    choice.reasoning_tokens = len(thinking)
    if thinking and thinking[-1] in codec.eos_ids:  # the model ended without an answer
        return
    closed = bool(thinking) and thinking[-1] == codec.think_end_id
    inserted = state.inserted.of(closed)
    cap, total = cfg.summary_max_tokens, body.token_cap()
    if total is not None:
        cap = max(1, min(cap, total - len(thinking)))
    head = state.protocol.answer_marker  # the answer paragraph's marker, as the model was trained to write it
    yield choice.index, "content", head
    answer = IncrementalText(codec.decode, frozenset(codec.eos_ids))
    text, emitted, sampled = "", 0, []
    async for delta in state.backend.stream(
        prompt + thinking + list(inserted), Sampling(cap, temperature, top_p, codec.eos_ids, seed)
    ):
        sampled += delta.token_ids
        text += answer.push(delta.token_ids)
        found = min((i for i in (text.find(s) for s in body.stops()) if i >= 0), default=-1)
        end = found if found >= 0 else len(text)
        if end > emitted:
            yield choice.index, "content", text[emitted:end]
            emitted = end
        if found >= 0:  # a stop string: the answer ends before it (closing the stream aborts the sequence)
            break
        if delta.finished and delta.finish_reason == "length":
            choice.finish_reason = "length"
    choice.content_tokens = len(sampled)


async def _chat_sse(
    state: ServerState,
    body: ChatRequest,
    completion_id: str,
    created: int,
    prompt: list[int],
    choices: list[_Choice],
    merged: AsyncIterator[tuple[int, str, str]],
) -> AsyncIterator[str]:
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                   "model": state.cfg.model_id, "choices": [choice]}  # fmt: skip
        return "data: " + json.dumps(payload) + "\n\n"

    try:
        for c in choices:
            yield chunk(c.index, {"role": "assistant", "content": ""})
        async for index, kind, text in merged:
            if text:
                yield chunk(index, {kind: text})
        for c in choices:
            yield chunk(c.index, {}, c.finish_reason)
        if body.stream_options is not None and body.stream_options.include_usage:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                       "model": state.cfg.model_id, "choices": [], "usage": _usage(prompt, choices)}  # fmt: skip
            yield "data: " + json.dumps(payload) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await merged.aclose()  # type: ignore[attr-defined]
