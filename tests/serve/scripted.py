"""A scripted streaming backend for the server's tests: each continuation is a fixed token list
chosen by the prompt, decoded in deltas of ``chunk`` tokens with a pause between them; it records
every prompt it was asked to continue and counts the sequences it holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from anytime_reasoner.serve.backends import Delta, Sampling


@dataclass
class ScriptedBackend:
    script: Callable[[list[int], Sampling], list[int]]  # the whole continuation of a prompt
    chunk: int = 1
    pause: float = 0.0
    finish_apart: bool = False  # the last tokens arrive unfinished, then an empty finishing delta (as an engine may send)
    name: str = "scripted"
    prompts: list[list[int]] = field(default_factory=list)
    live: int = 0

    async def stream(self, prompt_ids: Sequence[int], sampling: Sampling) -> AsyncIterator[Delta]:
        prompt = list(prompt_ids)
        self.prompts.append(prompt)
        tokens = self.script(prompt, sampling)
        stop = next((i for i, t in enumerate(tokens) if t in sampling.stop_ids), None)
        if stop is not None:
            tokens = tokens[: stop + 1]
        tokens = tokens[: sampling.max_tokens]
        self.live += 1
        try:
            for start in range(0, len(tokens), self.chunk):
                await asyncio.sleep(self.pause)
                last = start + self.chunk >= len(tokens) and not self.finish_apart
                yield Delta(tokens[start : start + self.chunk], last, _reason(tokens, sampling) if last else None)
            if not tokens or self.finish_apart:
                yield Delta([], True, _reason(tokens, sampling))
        finally:
            self.live -= 1

    def running(self) -> int:
        return self.live

    async def close(self) -> None:
        pass


def _reason(tokens: list[int], sampling: Sampling) -> str:
    return "stop" if tokens and tokens[-1] in sampling.stop_ids else "length"
