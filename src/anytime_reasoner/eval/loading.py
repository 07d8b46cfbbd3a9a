"""Load a Hugging Face causal LM + tokenizer for ``eval`` and ``ask``, with one-line errors.

The tokenizer must encode ``think_start`` and ``think_end`` as single tokens (the rollout stops the
thinking on ``</think>`` and the grader counts it); otherwise :class:`UserError` names the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anytime_reasoner.errors import UserError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    codec: Any  # rollout.codec.TokenizerCodec
    engine: Any  # engine.hf.TransformersEngine


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise UserError(f"tokenizer: cannot load {path!r} ({type(err).__name__}: {_first_line(err)})") from None


def codec_for(tokenizer: Any, think_start: str, think_end: str) -> Any:
    """The rollout's tokenizer facts; the error names this command's keys (think_start/think_end)."""
    from anytime_reasoner.rollout.codec import TokenizerCodec

    try:
        return TokenizerCodec.from_tokenizer(tokenizer, think_start, think_end)
    except UserError as err:
        raise UserError(str(err).replace("model.think_", "think_")) from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but no CUDA device is available; allowed here: cpu, auto")
    return device


def load(model: str, tokenizer: Any, dtype: str, device: str, think_start: str, think_end: str) -> Loaded:
    """Tokenizer (a path, None for the model's, or an already loaded one; checked first: cheap),
    then the model on its device, then the engine."""
    import torch
    from transformers import AutoModelForCausalLM

    from anytime_reasoner.engine.hf import TransformersEngine

    tok = load_tokenizer(tokenizer or model) if tokenizer is None or isinstance(tokenizer, str) else tokenizer
    codec = codec_for(tok, think_start, think_end)
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
    except Exception as err:
        raise UserError(f"model: cannot load {model!r} as a causal LM ({type(err).__name__}: {_first_line(err)})") from None
    lm = lm.to(resolve_device(device)).eval()
    return Loaded(lm, tok, codec, TransformersEngine(lm, pad_token_id=codec.pad_id))
