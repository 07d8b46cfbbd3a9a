"""Answers at every budget from one thinking, while it runs: the server's anytime session.

:class:`AnytimeSession` streams one thinking (stopping on think-end, an EOS id, or the largest
budget) and, the moment the thinking passes a budget b, *forks* the summary at b: a second
sequence from ``prompt + thinking[:b] + forced text`` (the cut protocol of docs/ALGORITHM.md §3,
``AnytimeProtocol.inserted_ids``, exactly as training and evaluation cut). The fork runs
concurrently with the continuing thinking, which never waits for it; its answer is an event as
soon as the summary is sampled. ``answer_now`` forks the same way at wherever the thinking stands.

Rules (as ``rollout.anytime.cut_groups``): at budget b a thinking still running past b is cut at
b (forced text: cut marker + ``</think>`` + answer delimiter); one that closed itself (think-end)
within b keeps all its tokens and gets only the answer delimiter. Budgets at or past the end of a
finished thinking share one prefix and so one summary. A budget is forked once the thinking holds
*more* than b tokens (or has finished), so a thinking that closes exactly at b is a natural end.

Departures: a thinking that stopped on an EOS id without think-end is cut before that EOS (a
prefix ending on EOS followed by forced text is not what the model saw in training; the training
rollout scores such a summary 0 instead). Summaries are capped at ``summary_max_tokens``, which
also keeps a model from reasoning on inside its forced answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.extract import extract_answer
from anytime_reasoner.rollout.anytime import cut_groups
from anytime_reasoner.serve.backends import Sampling, StreamingBackend
from anytime_reasoner.serve.text import IncrementalText


@dataclass(frozen=True)
class BudgetAnswer:
    """The answer at one budget (or at an answer-now cut: ``budget`` None)."""

    budget: int | None
    answer: str | None  # the \boxed{} content of the answer paragraph; None if there is none
    summary: str  # the sampled summary text
    thinking_tokens: int  # thinking tokens before the forced text
    thinking_done: bool  # the thinking had ended at or before this cut
    reached_s: float  # seconds from the start until the thinking reached this cut
    answered_s: float  # seconds from the start until this answer was sampled
    summary_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    prompt_tokens: int = 0
    thinking_tokens: int = 0
    summary_tokens: int = 0


@dataclass
class AnytimeSession:
    """One question's thinking and its answers (see the module docstring). Consume :meth:`events`."""

    backend: StreamingBackend
    codec: TokenizerCodec
    protocol: AnytimeProtocol
    prompt_ids: list[int]
    budgets: Sequence[int]
    temperature: float = 0.6
    top_p: float = 1.0
    seed: int | None = None
    thinking: list[int] = field(default_factory=list)
    done: bool = False  # the thinking ended
    closed: bool = False  # it ended on think-end
    usage: Usage = field(default_factory=Usage)
    _events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    _forks: set[asyncio.Task[Any]] = field(default_factory=set)
    _thinking_task: asyncio.Task[Any] | None = None
    _stop_requested: bool = False
    _start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.usage.prompt_tokens = len(self.prompt_ids)
        self._inserted = self.protocol.inserted_ids(self.codec)

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """``("thinking", text)`` deltas, ``("answer", BudgetAnswer)`` per budget (in the order they
        are sampled), ``("answer_now", BudgetAnswer)`` for each answer-now, then ``("done", None)``.
        Closing the iterator early cancels the thinking and every fork (the engine aborts them)."""
        self._thinking_task = asyncio.create_task(self._think())
        finished = False
        try:
            while True:
                kind, payload = await self._events.get()
                if kind == "error":
                    raise payload
                yield kind, payload
                if kind == "done":
                    finished = True
                    return
        finally:
            if not finished:
                await self.cancel()

    async def cancel(self) -> None:
        tasks = [t for t in (self._thinking_task, *self._forks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop_thinking(self) -> None:
        """End the thinking where it stands (the budgets not reached are answered at that cut)."""
        if self._thinking_task is not None and not self._thinking_task.done() and not self.done:
            self._stop_requested = True
            self._thinking_task.cancel()

    async def answer_now(self) -> BudgetAnswer:
        """The answer at the thinking as it stands, forked now (the thinking goes on)."""
        cut, natural = self._cut_at(len(self.thinking))
        answer = await self._summarize(None, cut, natural, time.perf_counter() - self._start)
        self._events.put_nowait(("answer_now", answer))
        return answer

    # ------------------------------------------------------------------ the thinking

    async def _think(self) -> None:
        pending = list(self.budgets)
        stops = (self.codec.think_end_id, *self.codec.eos_ids)
        sampling = Sampling(max(self.budgets), self.temperature, self.top_p, stops, self.seed)
        text = IncrementalText(self.codec.decode, frozenset(stops))
        try:
            try:
                async for delta in self.backend.stream(self.prompt_ids, sampling):
                    self.thinking += delta.token_ids
                    self.usage.thinking_tokens = len(self.thinking)
                    shown = text.push(delta.token_ids)
                    if shown:
                        self._events.put_nowait(("thinking", shown))
                    while pending and len(self.thinking) > pending[0] and not delta.finished:
                        self._fork([pending.pop(0)], pending_cut=None)
            except asyncio.CancelledError:
                if not self._stop_requested:  # the session is cancelled: nothing left to answer
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # stopped: answer where it stands
            self.done = True
            self.closed = bool(self.thinking) and self.thinking[-1] == self.codec.think_end_id
            self._fork_rest(pending)
            await asyncio.gather(*self._forks)
            self._events.put_nowait(("done", None))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the engine failed: the consumer gets it
            self._events.put_nowait(("error", err))

    def _fork_rest(self, budgets: list[int]) -> None:
        """Budgets the thinking did not pass: grouped by their cut of the finished thinking."""
        length = self._kept_length()
        for group in cut_groups(length, self.closed, budgets):
            self._fork([budgets[j] for j in group.budget_indices], pending_cut=(group.cut, group.natural))

    def _kept_length(self) -> int:
        """Thinking tokens a cut may keep: all of them, less a trailing EOS (module docstring)."""
        n = len(self.thinking)
        if self.done and not self.closed and n and self.thinking[-1] in self.codec.eos_ids:
            return n - 1
        return n

    def _cut_at(self, length: int) -> tuple[int, bool]:
        natural = self.closed and self.done
        return (self._kept_length() if self.done else length), natural

    def _fork(self, budgets: list[int], pending_cut: tuple[int, bool] | None) -> None:
        cut, natural = pending_cut if pending_cut is not None else (budgets[0], False)
        reached = time.perf_counter() - self._start
        task = asyncio.create_task(self._answer(budgets, cut, natural, reached))
        self._forks.add(task)

    async def _answer(self, budgets: list[int], cut: int, natural: bool, reached: float) -> None:
        answer = await self._summarize(budgets[0], cut, natural, reached)
        for budget in budgets:
            done = self.done and len(self.thinking) <= budget
            self._events.put_nowait(("answer", BudgetAnswer(**{**answer.as_dict(), "budget": budget, "thinking_done": done})))

    async def _summarize(self, budget: int | None, cut: int, natural: bool, reached: float) -> BudgetAnswer:
        forced = list(self.thinking[:cut]) + list(self._inserted.of(natural))
        sampling = Sampling(self.protocol.summary_max_tokens, self.temperature, self.top_p, self.codec.eos_ids, self.seed)
        sampled: list[int] = []
        async for delta in self.backend.stream(self.prompt_ids + forced, sampling):
            sampled += delta.token_ids
        self.usage.summary_tokens += len(sampled)
        text = self.codec.decode([t for t in sampled if t not in self.codec.eos_ids])
        answer = extract_answer(self.codec.decode(forced) + text, self.protocol.think_end, self.protocol.answer_marker)
        return BudgetAnswer(
            budget=budget,
            answer=answer,
            summary=text,
            thinking_tokens=cut,
            thinking_done=self.done and natural,
            reached_s=round(reached, 4),
            answered_s=round(time.perf_counter() - self._start, 4),
            summary_tokens=len(sampled),
        )
