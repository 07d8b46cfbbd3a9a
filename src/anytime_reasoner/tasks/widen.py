"""Widen a model's attention heads without changing what it computes (for vLLM's CPU kernels).

vLLM's CPU attention has kernels for head sizes of 32 and up; the embedded tiny model has heads
of 24. :func:`widen_heads` turns a Qwen2 or Llama decoder with head size ``d`` into a
``LlamaForCausalLM`` with head size ``d' > d`` (``config.head_dim``, which vLLM's Llama reads and
its Qwen2 does not) that gives the same logits:

- each head's query/key/value rows are placed at dims ``[0, d/2)`` and ``[d'/2, d'/2 + d/2)`` and
  the rest are zero. Rotary embedding pairs dim ``j`` with ``j + d/2``; the new layout keeps each
  pair together (``j`` with ``j + d'/2``), and zero dims stay zero under any rotation;
- the rotary base becomes ``θ' = θ^(d'/d)``, so pair ``j`` turns at ``θ'^(−2j/d') = θ^(−2j/d)``,
  its old frequency;
- queries are scaled by ``sqrt(d'/d)``: attention divides by ``sqrt(d')`` now, ``sqrt(d)`` before;
- the output projection reads the widened value dims (zero columns on the padding);
- Qwen2's query/key/value biases are kept (Llama's ``attention_bias``), with a zero output bias.

Training the widened model moves the zero dims too: it stays a valid model of the same shape.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def head_size(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _place(weight: torch.Tensor, n_heads: int, old: int, new: int) -> torch.Tensor:
    """Rows ``[n_heads·old, ...]`` → ``[n_heads·new, ...]`` with each head's halves at 0 and new/2."""
    rest = weight.shape[1:]
    heads = weight.reshape(n_heads, old, *rest)  # [H, d, ...]
    out = weight.new_zeros(n_heads, new, *rest)  # [H, d', ...]
    half, new_half = old // 2, new // 2
    out[:, :half] = heads[:, :half]
    out[:, new_half : new_half + half] = heads[:, half:]
    return out.reshape(n_heads * new, *rest)


def widen_heads(model: Any, head_dim: int) -> Any:
    """A ``LlamaForCausalLM`` with heads of ``head_dim`` computing what ``model`` computes (Qwen2 or Llama)."""
    cfg = model.config
    if cfg.model_type not in ("qwen2", "llama"):
        raise ValueError(f"widen_heads: model_type {cfg.model_type!r} not supported; allowed: qwen2, llama")
    old = head_size(cfg)
    if head_dim < old or head_dim % 2 or old % 2:
        raise ValueError(f"widen_heads: head_dim must be even and >= {old}, got {head_dim}")
    theta = float((getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"widen_heads: rope_type {rope_type!r} not supported; allowed: default")
    wide = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=head_dim,
        hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_theta": theta ** (head_dim / old), "rope_type": "default"},
        attention_bias=True,
        mlp_bias=False,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
    )
    state = _widened_state(model, cfg, old, head_dim)
    out = LlamaForCausalLM(wide).to(next(model.parameters()).dtype)
    missing, unexpected = out.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]:
        raise RuntimeError(f"widen_heads: state mismatch: missing {missing}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        out.tie_weights()
    out.generation_config = model.generation_config
    return out.eval()


def _widened_state(model: Any, cfg: Any, old: int, new: int) -> dict[str, torch.Tensor]:
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    scale = math.sqrt(new / old)
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            value = value.detach().clone()
            if ".self_attn.q_proj." in key:
                value = _place(value, heads, old, new) * scale
            elif ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
                value = _place(value, kv_heads, old, new)
            elif key.endswith(".self_attn.o_proj.weight"):
                value = _place(value.t(), heads, old, new).t().contiguous()  # [hidden, H·d']
                state[key.replace(".weight", ".bias")] = value.new_zeros(value.shape[0])
            state[key] = value
        for i in range(cfg.num_hidden_layers):  # Llama's attention_bias covers q, k, v and o
            prefix = f"model.layers.{i}.self_attn."
            for name, rows in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)):
                state.setdefault(prefix + f"{name}.bias", state[prefix + f"{name}.weight"].new_zeros(rows * new))
    return state
