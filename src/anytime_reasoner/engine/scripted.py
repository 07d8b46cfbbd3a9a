"""A scripted, model-free generation engine for tests.

:class:`ScriptedEngine` returns token streams chosen by a script — a function
``(prefix, sample_index) -> tokens`` or a table ``prefix -> [tokens, ...]`` — cut the way a real
engine cuts them: at the first stop id (kept, finish ``"stop"``) or at ``max_new_tokens``
(finish ``"length"``). Sampling parameters other than the cap and the stop ids are ignored.

Every call is recorded (:class:`EngineCall`: the prefixes, their lengths, the sample counts, the
parameters), so tests can check at the rollout level which prefixes were encoded and how often.

Departure from a real engine: a scripted stream that runs out before the cap without a stop id
is an error (a real model would keep going), so that scripts state exactly what is sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from anytime_reasoner.engine.base import Completion, SampleCounts, SamplingParams, sample_counts

Tokens = tuple[int, ...]
ScriptFn = Callable[[Tokens, int], Sequence[int]]


@dataclass(frozen=True)
class EngineCall:
    """One ``sample`` call: ``prefixes[i]`` was encoded once for ``counts[i]`` samples."""

    prefixes: tuple[Tokens, ...]
    counts: tuple[int, ...]
    params: SamplingParams

    @property
    def prefix_lengths(self) -> tuple[int, ...]:
        return tuple(len(p) for p in self.prefixes)


@dataclass
class ScriptedEngine:
    """Emit scripted continuations; ``sample_index`` runs over ``0 .. n_i - 1`` per prefix."""

    script: ScriptFn
    calls: list[EngineCall] = field(default_factory=list)

    @classmethod
    def from_table(cls, table: Mapping[Sequence[int], Sequence[Sequence[int]]]) -> ScriptedEngine:
        """Sample ``i`` of a prefix gets ``table[prefix][i % len(table[prefix])]``."""
        frozen = {tuple(k): [tuple(v) for v in vs] for k, vs in table.items()}

        def lookup(prefix: Tokens, index: int) -> Sequence[int]:
            if prefix not in frozen:
                raise KeyError(f"ScriptedEngine: no script for a prefix of length {len(prefix)} ending {prefix[-8:]}")
            streams = frozen[prefix]
            return streams[index % len(streams)]

        return cls(lookup)

    def sample(self, prefixes: Sequence[Sequence[int]], n: SampleCounts, params: SamplingParams) -> list[list[Completion]]:
        counts = sample_counts(n, len(prefixes))
        frozen = tuple(tuple(int(t) for t in p) for p in prefixes)
        self.calls.append(EngineCall(prefixes=frozen, counts=tuple(counts), params=params))
        return [[self._complete(p, i, params) for i in range(c)] for p, c in zip(frozen, counts, strict=False)]

    def _complete(self, prefix: Tokens, index: int, params: SamplingParams) -> Completion:
        stream = tuple(int(t) for t in self.script(prefix, index))
        return truncate(stream, params.max_new_tokens, params.stop_token_ids)

    # -- what was encoded ------------------------------------------------------------------

    @property
    def encoded_prefixes(self) -> list[Tokens]:
        """Every prefix passed to the engine, in call order (each is encoded once)."""
        return [p for call in self.calls for p in call.prefixes]

    @property
    def encoded_tokens(self) -> int:
        """Total prefix tokens encoded over all calls."""
        return sum(len(p) for p in self.encoded_prefixes)


def truncate(stream: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> Completion:
    """Cut a token stream as an engine would: through the first stop id, else at the cap."""
    stops = set(stop_ids)
    for i, tok in enumerate(stream[:max_new_tokens]):
        if tok in stops:
            return Completion(tuple(stream[: i + 1]), "stop")
    if len(stream) < max_new_tokens:
        raise ValueError(
            f"ScriptedEngine: scripted stream of {len(stream)} tokens ends before the cap "
            f"({max_new_tokens}) without a stop id {tuple(stop_ids)}"
        )
    return Completion(tuple(stream[:max_new_tokens]), "length")
