"""The generation-engine protocol: the one interface every backend implements.

An engine samples ``n`` continuations for each of a batch of token-id prefixes. Each prefix is
encoded once and its state (KV cache) shared by its ``n`` samples: the anytime rollout relies on
this to sample A summaries from one cut of a thinking without re-encoding the thinking A times.
Token ids for stopping come from the caller (read from the tokenizer), never from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    ``token_ids`` holds the sampled tokens, including the stop token when one ended it;
    ``finish_reason`` is ``"stop"`` (a stop token was sampled) or ``"length"`` (the cap was hit).
    """

    token_ids: tuple[int, ...]
    finish_reason: FinishReason


class GenerationEngine(Protocol):
    def sample(
        self, prefixes: Sequence[Sequence[int]], n: int, params: SamplingParams
    ) -> list[list[Completion]]:
        """``[len(prefixes)][n]`` completions; each prefix is encoded once for its n samples."""
        ...
