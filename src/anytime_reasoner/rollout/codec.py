"""The tokenizer facts the rollout needs, read once from a Hugging Face tokenizer, and the prompt.

:class:`TokenizerCodec` holds the think-start / think-end / EOS / pad ids (never hard-coded: SPEC
§10) and encodes/decodes text without adding or skipping special tokens, so ``</think>`` survives a
round trip into the grader. The think-end marker must be a single token: the rollout stops the
thinking on it and counts it when checking the format.

:func:`build_prompt_ids` renders a question with the tokenizer's chat template (SPEC §8 prompt) and
makes sure the prompt ends with ``<think>\\n`` (appended when the template does not open the
thinking itself, e.g. Qwen-style templates).

Departure: when the tokenizer has no pad token, the EOS id is used for padding (only ever
attention-masked, so it never reaches the model's view of the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from anytime_reasoner.errors import UserError

PROMPT_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."


@dataclass(frozen=True)
class TokenizerCodec:
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    think_start: str
    think_end: str
    think_start_id: int
    think_end_id: int
    eos_id: int
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, think_start: str = "<think>", think_end: str = "</think>") -> "TokenizerCodec":
        """Read the ids from ``tokenizer``; raise :class:`UserError` (one line) when a marker is
        not a single token or the tokenizer has no EOS token."""
        start_id = _single_token(tokenizer, think_start, "model.think_start")
        end_id = _single_token(tokenizer, think_end, "model.think_end")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise UserError("tokenizer: has no eos_token; set one (the rollout stops summaries on it)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        return cls(tokenizer, think_start, think_end, start_id, end_id, int(eos), int(pad))

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


def build_prompt_ids(codec: TokenizerCodec, question: str, suffix: str = PROMPT_SUFFIX) -> list[int]:
    """Chat-template prompt for ``question`` ending with ``think_start + "\\n"``."""
    messages = [{"role": "user", "content": question + suffix}]
    text = codec.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    opener = codec.think_start + "\n"
    if not text.endswith(opener):
        text = text + ("\n" if text.endswith(codec.think_start) else opener)
    return codec.encode(text)
