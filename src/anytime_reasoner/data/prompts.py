"""Chat prompts as token ids: ``<user>{question …}<assistant><think>\\n`` in the model's template.

The prompt is rendered by the tokenizer's own chat template with the generation prompt; when the
rendered text does not already end with the think-start tag plus a newline (R1-Distill's template
adds it, many others do not), ``think_start + "\\n"`` is appended so every thinking starts the same
way (docs/ALGORITHM.md §8) — the one place this rule lives (:func:`build_prompt_ids` renders a bare question
with it).
A tokenizer without a chat template gets a plain ``User: … / Assistant:`` layout — a departure
from the seed, which only ran templated models, so that tiny test tokenizers work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.schema import Example
from anytime_reasoner.protocol import THINK_START


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]], think_start: str = THINK_START) -> str:
    """The prompt text the model sees, ending with ``think_start`` and a newline."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    else:
        turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
        text = f"{turns}Assistant: "
    if text.endswith(think_start + "\n"):
        return text
    return text + ("\n" if text.endswith(think_start) else think_start + "\n")


def encode_prompt(tokenizer: Any, messages: Sequence[dict[str, str]], think_start: str = THINK_START) -> list[int]:
    """Token ids of :func:`render_prompt` (the template already holds any BOS text)."""
    return list(tokenizer.encode(render_prompt(tokenizer, messages, think_start), add_special_tokens=False))


def with_budget(messages: Sequence[dict[str, str]], template: str, n: int) -> list[dict[str, str]]:
    """The messages with the budget sentence (``template`` with ``{n}`` = ``n``) appended to the
    last user turn after a blank line, as L1 states its target ("… Think for 1024 tokens.")."""
    out = [dict(m) for m in messages]
    last = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=None)
    if last is None:
        raise ValueError("with_budget: the prompt has no user message to state the budget in")
    out[last]["content"] = f"{out[last]['content']}\n\n{template.format(n=n)}"
    return out


def build_prompt_ids(codec: TokenizerCodec, question: str) -> list[int]:
    """Chat-template prompt for a bare ``question`` (the docs/ALGORITHM.md §8 instruction appended),
    ending with ``think_start + "\\n"``."""
    example = Example.from_problem("question", "user", question, ())
    return encode_prompt(codec.tokenizer, example.messages, codec.think_start)
