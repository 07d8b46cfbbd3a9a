"""Token ids to text as they stream in, without re-decoding the whole sequence per token and without
splitting a character whose bytes span two tokens (the window rule of vLLM's detokenizer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class IncrementalText:
    """Feed ids with :meth:`push`; each call returns the text they complete."""

    decode: Callable[[Sequence[int]], str]
    skip: frozenset[int] = frozenset()  # ids never shown (think-end, EOS)
    ids: list[int] = field(default_factory=list)
    _prefix: int = 0  # start of the window decoded for context
    _read: int = 0  # ids already turned into returned text

    def push(self, new_ids: Sequence[int]) -> str:
        self.ids += [t for t in new_ids if t not in self.skip]
        before = self.decode(self.ids[self._prefix : self._read])
        after = self.decode(self.ids[self._prefix :])
        if after.endswith("\ufffd"):  # a character still incomplete: wait for its next token
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]
