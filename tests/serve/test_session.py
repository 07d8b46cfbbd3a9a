"""The anytime session cuts, forks and answers exactly as the cut protocol says (a scripted engine)."""

from __future__ import annotations

import asyncio

import pytest

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.serve.anytime import AnytimeSession
from tests.serve.scripted import ScriptedBackend

PROTOCOL = AnytimeProtocol(summary_max_tokens=16)


@pytest.fixture
def codec(tiny_tokenizer):
    return TokenizerCodec.for_protocol(tiny_tokenizer, PROTOCOL)


def _run(session):
    async def collect():
        return [event async for event in session.events()]

    return asyncio.run(collect())


def _script(codec, thinking_text, close, answer="\\boxed{7}"):
    """Thinking: ``thinking_text`` (+ think-end if ``close``); any other prompt gets ``answer`` + EOS."""
    thinking = codec.encode(thinking_text) + ([codec.think_end_id] if close else [])
    summary = codec.encode(answer) + [codec.eos_id]

    def script(prompt, sampling):
        return thinking if codec.think_end_id in sampling.stop_ids else summary

    return thinking, script


def test_each_budget_forks_the_protocols_prefix(codec):
    thinking, script = _script(codec, "a=1 best=1\nb=7 best=7\nc=2 best=7\n", close=True)
    n = len(thinking)  # the closing think-end is its last token
    budgets = [5, 10, n, n + 20]
    backend = ScriptedBackend(script)
    prompt = codec.encode("question")
    session = AnytimeSession(backend, codec, PROTOCOL, prompt, budgets)
    events = _run(session)
    answers = {e[1].budget: e[1] for e in events if e[0] == "answer"}
    assert sorted(answers) == budgets and events[-1][0] == "done"
    inserted = PROTOCOL.inserted_ids(codec)
    # budgets 5 and 10 cut inside: thinking[:b] + cut marker + </think> + delimiter; budget n and n + 20
    # are past the thinking's natural end: one summary after thinking + the delimiter alone
    expected = [prompt + thinking[:5] + list(inserted.forced), prompt + thinking[:10] + list(inserted.forced),
                prompt + thinking + list(inserted.closed)]  # fmt: skip
    summaries = [p for p in backend.prompts if p != prompt]
    assert len(summaries) == 3 and sorted(summaries) == sorted(expected)
    assert [answers[b].thinking_tokens for b in budgets] == [5, 10, n, n]
    assert [answers[b].thinking_done for b in budgets] == [False, False, True, True]
    assert all(a.answer == "7" for a in answers.values())
    assert session.usage.thinking_tokens == n and session.usage.summary_tokens == 3 * (len(codec.encode("\\boxed{7}")) + 1)


def test_a_budget_equal_to_an_unfinished_length_waits_for_the_next_token(codec):
    # a thinking that closes exactly at b ends naturally at b: it must not be forced at b, even when
    # the engine reports the end in a delta of its own after the b-th token (a fork at len >= b would)
    thinking, script = _script(codec, "a=1 best=1\n", close=True)
    b = len(thinking)
    backend = ScriptedBackend(script, chunk=1, finish_apart=True)
    session = AnytimeSession(backend, codec, PROTOCOL, [1, 2], [b])
    answer = next(e[1] for e in _run(session) if e[0] == "answer")
    closed = list(PROTOCOL.inserted_ids(codec).closed)  # the delimiter alone, no cut marker or forced </think>
    assert backend.prompts[1] == [1, 2] + thinking + closed
    assert answer.thinking_done and answer.thinking_tokens == b


def test_summaries_run_while_the_thinking_goes_on(codec):
    # one token per 5 ms for 60 tokens: the answer at budget 10 arrives before the thinking ends
    thinking, script = _script(codec, "x" * 60, close=False)
    session = AnytimeSession(ScriptedBackend(script, pause=0.005), codec, PROTOCOL, [1], [10, 60])
    events = _run(session)
    kinds = [e[0] for e in events]
    first_answer = kinds.index("answer")
    assert "thinking" in kinds[first_answer:], "the thinking paused for the summary"
    assert events[first_answer][1].budget == 10


def test_answer_now_cuts_where_the_thinking_stands_and_stop_ends_it(codec):
    thinking, script = _script(codec, "x" * 200, close=False)
    backend = ScriptedBackend(script, pause=0.002)
    session = AnytimeSession(backend, codec, PROTOCOL, [1], [150, 200])

    async def scenario():
        events, now = [], None
        async for event in session.events():
            events.append(event)
            if event[0] == "thinking" and len(session.thinking) >= 20 and now is None:
                now = await session.answer_now()
                session.stop_thinking()
        return events, now

    events, now = asyncio.run(scenario())
    assert now is not None and 20 <= now.thinking_tokens < 150 and now.budget is None
    assert any(e[0] == "answer_now" for e in events)
    stopped_at = len(session.thinking)
    answers = [e[1] for e in events if e[0] == "answer"]
    # stopped before 150: both budgets are answered at the cut where the thinking stopped, once
    assert [a.budget for a in answers] == [150, 200] and {a.thinking_tokens for a in answers} == {stopped_at}
    assert stopped_at < 150 and events[-1][0] == "done" and backend.live == 0


def test_closing_the_events_cancels_every_sequence(codec):
    thinking, script = _script(codec, "x" * 300, close=False)
    backend = ScriptedBackend(script, pause=0.002)
    session = AnytimeSession(backend, codec, PROTOCOL, [1], [5, 300])

    async def scenario():
        events = session.events()
        async for kind, _ in events:
            if kind == "answer":
                break
        await events.aclose()
        return backend.live

    assert asyncio.run(scenario()) == 0
