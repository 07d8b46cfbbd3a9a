"""The tokenizer facts the rollout needs, read once from a Hugging Face tokenizer.

:class:`TokenizerCodec` holds the think-start / think-end / EOS / pad ids (never hard-coded:
docs/ALGORITHM.md §10) and encodes/decodes text without adding or skipping special tokens, so ``</think>`` survives a
round trip into the grader. The think-end marker must be a single token: the rollout stops the
thinking on it and counts it when checking the format.

The prompt a question becomes is :mod:`anytime_reasoner.data.prompts`' business
(:func:`~anytime_reasoner.data.prompts.build_prompt_ids`).

EOS ids (docs/ALGORITHM.md §3.5): ``eos_id`` is the tokenizer's EOS, the one whose ending of a
thinking makes the summaries at that cut score 0 (as the original's ``EOS_ID`` check); ``eos_ids``
is every id that ends a generation — the tokenizer's EOS first, then any other EOS id the model's
generation config lists (``models.loading.generation_eos_ids``). The rollout stops thinkings and
summaries on all of them, as an engine that applies the generation config (the original's vLLM)
does; a thinking that stops on one of the others is cut there and graded like any cut thinking.

Departure: when the tokenizer has no pad token, the EOS id is used for padding (only ever
attention-masked, so it never reaches the model's view of the text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anytime_reasoner.errors import UserError
from anytime_reasoner.protocol import THINK_END, THINK_START, AnytimeProtocol


@dataclass(frozen=True)
class TokenizerCodec:
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    think_start: str
    think_end: str
    think_start_id: int
    think_end_id: int
    eos_id: int
    pad_id: int
    eos_ids: tuple[int, ...] = ()  # every id that ends a generation; () means (eos_id,)

    def __post_init__(self) -> None:
        extra = tuple(int(i) for i in self.eos_ids if int(i) != self.eos_id)
        object.__setattr__(self, "eos_ids", (self.eos_id, *dict.fromkeys(extra)))

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, think_start: str = THINK_START, think_end: str = THINK_END, extra_eos_ids: Sequence[int] = ()
    ) -> TokenizerCodec:
        """Read the ids from ``tokenizer`` (``extra_eos_ids``: the model's other EOS ids); raise
        :class:`UserError` (one line) when a marker is not a single token or the tokenizer has no EOS token."""
        start_id = _single_token(tokenizer, think_start, "model.think_start")
        end_id = _single_token(tokenizer, think_end, "model.think_end")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise UserError("tokenizer: has no eos_token; set one (the rollout stops summaries on it)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        return cls(tokenizer, think_start, think_end, start_id, end_id, int(eos), int(pad), tuple(extra_eos_ids))

    @classmethod
    def for_protocol(cls, tokenizer: Any, protocol: AnytimeProtocol, extra_eos_ids: Sequence[int] = ()) -> TokenizerCodec:
        """The tokenizer facts for ``protocol``'s think markers (each must be one token)."""
        return cls.from_tokenizer(tokenizer, protocol.think_start, protocol.think_end, extra_eos_ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` exactly (no BOS/EOS added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept (``</think>`` must reach the grader)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _single_token(tokenizer: Any, text: str, key: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise UserError(
            f"{key}: {text!r} is {len(ids)} tokens {list(ids)} in this tokenizer; it must be exactly one "
            "(add it as a special token or pick the model's own marker)"
        )
    return int(ids[0])
