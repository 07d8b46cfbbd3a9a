"""The generation-engine protocol: the one interface every backend implements.

An engine samples ``n`` continuations for each of a batch of token-id prefixes. Each prefix is
encoded once and its state (KV cache) shared by its ``n`` samples: the anytime rollout relies on
this to sample A summaries from one cut of a thinking without re-encoding the thinking A times.
Token ids for stopping come from the caller (read from the tokenizer), never from the engine.

Extension (compatible): ``n`` may also be a sequence with one sample count per prefix, so that one
call can serve prefixes that need different numbers of samples (the anytime rollout samples
``A × k`` summaries from a cut shared by ``k`` budgets). A count of 0 yields an empty list.

Answers in the thinking's pass (:class:`AnswerEngine`, optional): an engine that can force tokens
inside decoding continues each thinking into its answer in the same pass — the answer delimiter
forced where the thinking closes itself, the cut text forced where it reaches the budget — so the
answer at the thinking's last cut needs no second encoding of the thinking (:class:`ForcedAnswer`).

Prefixes already encoded: ``SamplingParams(keep_cache=True)`` asks an engine that keeps a KV cache
to hold this call's (prefixes and samples) for the next call, which takes from it the head of any
prefix it already holds and encodes only the rest (the summaries after cuts of the thinkings just
sampled); the next call consumes what is held. Engines with their own prefix caching (vLLM) or no
model ignore it.

Log-probs: with ``SamplingParams(logprobs=True)`` a model-backed engine also returns, per sampled
token, ``log softmax(logits / temperature)`` at that token (raw logits at temperature 0): the
quantity the trainer recomputes as its old log-probs, so the two can be compared
(``algo.off_policy``). Top-p does not enter it. Engines without a model return None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]
SampleCounts = int | Sequence[int]  # one n for all prefixes, or one per prefix


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = False  # also return each sampled token's log-prob (Completion.logprobs)
    keep_cache: bool = False  # hold this call's KV cache for the next call's prefixes (engines without one ignore it)

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
    ``finish_reason`` is ``"stop"`` (a stop token was sampled) or ``"length"`` (the cap was hit);
    ``logprobs`` (one per token, when asked for and the engine has a model) the sampling log-prob;
    ``answer`` (from :meth:`AnswerEngine.sample_with_answers` only) the answer sampled after it in
    the same pass, None where the thinking ended on a stop id other than ``close_id``.
    """

    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None
    answer: Answer | None = None


@dataclass(frozen=True)
class Answer:
    """The forced tokens after a thinking (never sampled) and the answer sampled after them."""

    inserted_ids: tuple[int, ...]
    completion: Completion


@dataclass(frozen=True)
class ForcedAnswer:
    """How a thinking continues into its answer in one pass.

    The thinking is sampled under the call's ``SamplingParams`` (its ``max_new_tokens`` is the
    budget, its ``stop_token_ids`` end the thinking). Where the thinking samples ``close_id``
    within the budget, ``after_close`` is forced; where it reaches the budget unclosed,
    ``after_budget`` is forced; then the answer is sampled, ended by one of ``stop_ids`` (kept,
    finish ``"stop"``) or after ``max_answer_tokens`` (finish ``"length"``). A thinking ended by
    another stop id gets no answer.
    """

    close_id: int
    after_close: tuple[int, ...]
    after_budget: tuple[int, ...]
    max_answer_tokens: int
    stop_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens: must be >= 1, got {self.max_answer_tokens}")
        if not self.stop_ids:
            raise ValueError("stop_ids: the answer needs at least one stop id")

    def longest(self, budget: int) -> int:
        """Tokens one pass may generate after the prefix: thinking, forced text, answer, and the stop
        an engine may force to end an answer at its cap."""
        return budget + max(len(self.after_close), len(self.after_budget)) + self.max_answer_tokens + 1


class GenerationEngine(Protocol):
    def sample(self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams) -> list[list[Completion]]:
        """``[len(prefixes)][n]`` completions (``[i][n[i]]`` when ``n`` is per prefix); each prefix
        is encoded once for its n samples."""
        ...


@runtime_checkable
class AnswerEngine(GenerationEngine, Protocol):
    def sample_with_answers(
        self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams, answer: ForcedAnswer
    ) -> list[list[Completion]]:
        """As :meth:`GenerationEngine.sample` (the thinkings), each completion carrying the answer
        sampled after it in the same pass (``Completion.answer``)."""
        ...


def sample_counts(n: SampleCounts, n_prefixes: int) -> list[int]:
    """Normalize ``n`` to one non-negative count per prefix (raise ``ValueError`` otherwise)."""
    counts = [n] * n_prefixes if isinstance(n, int) else [int(c) for c in n]
    if len(counts) != n_prefixes:
        raise ValueError(f"n: {len(counts)} sample counts given for {n_prefixes} prefixes")
    if any(c < 0 for c in counts):
        raise ValueError(f"n: sample counts must be >= 0, got {counts}")
    return counts
