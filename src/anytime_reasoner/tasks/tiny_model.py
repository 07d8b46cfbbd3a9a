"""The tiny default policy: a randomly initialised transformers Qwen2 decoder of about 0.45M parameters.

Small enough to train by SFT in a few minutes and to sample hundreds of short thinkings per second
on two CPU cores; a real ``Qwen2ForCausalLM``, so every part of the project (generation engines,
packed training rows, ``save_pretrained``/``from_pretrained``) treats it like a downloaded model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int = 96
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_positions: int = 1024
    rope_theta: float = 10000.0


def tiny_config(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        rope_parameters={"rope_theta": spec.rope_theta, "rope_type": "default"},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def build_tiny_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen2ForCausalLM:
    """A freshly initialised model (deterministic for a seed)."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(spec, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
