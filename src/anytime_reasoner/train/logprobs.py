"""Log-probs of the taken tokens from any Hugging Face causal LM, packed or plain.

The decoder body (``model.get_decoder()``) runs once over the rows; the output head
(``model.get_output_embeddings()``) is then applied to the hidden states of the predicting tokens
in chunks of ``chunk_size`` tokens, each chunk doing ``log_softmax`` + gather and — when gradients
are on — wrapped in activation checkpointing, so at most ``[chunk_size, vocab]`` float32 logits
exist at any time, in the forward *and* the backward pass.

Only the tokens asked for are scored (by default the trainable ones of a :class:`PackedBatch`);
the hidden state that predicts token t is the one at ``prev_index[t]`` (see ``train.packing``),
which is what makes the first token of a summary block read the last thinking token it sees.

Output head: ``lm_head(h)``, then Gemma-style ``final_logit_softcapping`` when the config sets it,
then division by ``temperature`` (as the seed's trainer does; 1.0 in training). Departure: other
model-specific logit transforms applied inside a model's ``forward`` after the head (e.g. Cohere's
``logit_scale``) are not reproduced; :func:`sequence_logprobs` with ``chunk_size=None`` goes through
the model's own ``forward`` and is the reference to compare against for a new architecture.
Training runs the model through :class:`PolicyScorer`, a module whose ``forward`` is the decoder
body plus the chunked head: under FSDP2 it is the root unit (embeddings, final norm, output
head, tied or not), so one module call gathers everything the log-probs need.

A tree mask is a custom 4-D mask, which transformers uses as given for every layer: sliding-window
layers (e.g. Qwen2 with ``use_sliding_window``) would see the full tree, not their window.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.checkpoint import checkpoint

from anytime_reasoner.train import flex, tree_attention
from anytime_reasoner.train.masks import dense_attention_mask, flex_block_mask
from anytime_reasoner.train.packing import PADDING, PackedBatch
from anytime_reasoner.train.tree_attention import TreeLayout, placeholder_mask

Attention = Literal["auto", "dense", "flex", "tree"]
DENSE_IMPLEMENTATIONS = ("eager", "sdpa")


def attn_implementation_for(attention: Attention, device: torch.device | str) -> str:
    """The ``attn_implementation`` to load a model with: flex → ``train.flex`` (FlexAttention,
    compiled a bounded number of times), dense → sdpa, tree → ``train.tree_attention``, auto →
    FlexAttention on CUDA, tree attention elsewhere (FlexAttention has no backward on CPU). Both
    custom implementations are sdpa outside packed rows (generation, evaluation)."""
    if attention == "flex" or (attention == "auto" and torch.device(device).type == "cuda"):
        return flex.register()
    if attention in ("tree", "auto"):
        return tree_attention.register()
    return "sdpa"


def uses_tree_attention(model: Any, attention: Attention = "auto") -> bool:
    """True when ``model``'s packed rows go through ``train.tree_attention`` (no ``[T, T]`` mask)."""
    return model.config._attn_implementation == tree_attention.IMPLEMENTATION and attention in ("auto", "tree")


def uses_flex(model: Any, attention: Attention = "auto") -> bool:
    """True when ``model``'s packed rows go through ``train.flex`` (a FlexAttention ``BlockMask``)."""
    return model.config._attn_implementation == flex.IMPLEMENTATION and attention in ("auto", "flex")


def attention_inputs(model: Any, batch: PackedBatch, attention: Attention = "auto") -> tuple[Any, TreeLayout | None]:
    """``(attention_mask, tree_layout)`` for ``batch`` under ``model``'s attention implementation.

    Under ``train.flex`` every batch gets a FlexAttention ``BlockMask`` of the tree rule, causal
    ones included (one mask function for every call: no extra compiled variant); the batch must
    already be :func:`~anytime_reasoner.train.flex.flex_width` wide (``packed_logprobs`` pads it).
    Otherwise a batch without summary blocks or second trees gets the ordinary 2-D padding mask
    ``[N, T]``; a tree-packed batch gets, under tree attention, a :class:`TreeLayout` beside an
    empty placeholder mask; with ``attention="dense"`` or an eager/sdpa model an additive float
    ``[N, 1, T, T]`` mask.
    """
    impl = model.config._attn_implementation
    if uses_flex(model, attention):
        return flex_block_mask(batch, block_size=flex.FLEX_BLOCK), None
    if batch.is_causal:
        return (batch.segment_ids != PADDING).long(), None  # [N, T]
    if uses_tree_attention(model, attention):
        return placeholder_mask(batch), TreeLayout.of(batch)
    if attention == "tree":
        raise ValueError(
            f"model.attention: 'tree' needs a model loaded with attn_implementation={tree_attention.IMPLEMENTATION!r}, got {impl!r}"
        )
    if attention == "flex":
        raise ValueError(
            f"model.attention: 'flex' needs a model loaded with attn_implementation={flex.IMPLEMENTATION!r}, got {impl!r}"
        )
    if impl not in DENSE_IMPLEMENTATIONS + (flex.IMPLEMENTATION, tree_attention.IMPLEMENTATION):
        raise ValueError(
            f"model.attention: attn_implementation {impl!r} cannot take a tree mask; use sdpa, eager, {flex.IMPLEMENTATION} "
            f"or {tree_attention.IMPLEMENTATION}"
        )
    return dense_attention_mask(batch, dtype=model.dtype), None  # [N, 1, T, T]


def decoder_hidden_states(
    model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor | None, attention_mask: Any, tree_layout: Any = None
) -> torch.Tensor:
    """Final hidden states of the decoder body, ``[N, T, H]`` (after the final norm); a
    ``tree_layout`` reaches every attention layer through transformers' keyword arguments."""
    decoder = model.get_decoder()
    if decoder is model:
        raise ValueError(f"{type(model).__name__}: get_decoder() does not expose a decoder body separate from the head")
    extra = {} if tree_layout is None else {"tree_layout": tree_layout}
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **extra)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # [N, T, H]


def _softcap(model: Any) -> float | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "final_logit_softcapping", None)


def _head_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, softcap: float | None, temperature: float
) -> torch.Tensor:
    """``log p(target | hidden)`` for ``[C, H]`` hidden states and ``[C]`` targets → float32 ``[C]``."""
    logits = head(hidden).float()  # [C, V]
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # [C]


def chunked_token_logprobs(
    model: Any,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs of ``targets [M]`` from their predicting hidden states ``hidden [M, H]`` → ``[M]``.

    Chunks of ``chunk_size`` rows through the output head; checkpointed when grad is enabled so
    the backward pass recomputes one chunk's logits at a time.
    """
    head = model.get_output_embeddings()
    softcap = _softcap(model)
    use_checkpoint = torch.is_grad_enabled() and hidden.requires_grad
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]  # [C, H], [C]
        if use_checkpoint:
            pieces.append(checkpoint(_head_logprobs, head, h, y, softcap, temperature, use_reentrant=False))
        else:
            pieces.append(_head_logprobs(head, h, y, softcap, temperature))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)  # [M]


class PolicyScorer(torch.nn.Module):
    """A causal LM seen by the trainer: ``forward`` returns log-probs of chosen tokens.

    ``lm`` stays a plain transformers (or peft) model for generation and saving.
    """

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        attention_mask: Any,
        rows: torch.Tensor,
        prev: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int = 1024,
        temperature: float = 1.0,
        tree_layout: Any = None,
    ) -> torch.Tensor:
        """``log p(targets[m] | hidden[rows[m], prev[m]])`` → float32 ``[M]``."""
        hidden = decoder_hidden_states(self.lm, input_ids, position_ids, attention_mask, tree_layout)  # [N, T, H]
        return chunked_token_logprobs(self.lm, hidden[rows, prev], targets, chunk_size=chunk_size, temperature=temperature)


def packed_logprobs(
    model: Any,
    batch: PackedBatch,
    *,
    attention: Attention = "auto",
    tokens: Literal["trainable", "all"] = "trainable",
    chunk_size: int = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probs of the taken tokens of ``batch`` (packed or plain rows) → float32 ``[N, T]``.

    ``tokens="trainable"`` scores the trainable tokens only; ``"all"`` every token that has a
    predecessor (``prev_index >= 0``). Other positions hold 0. ``model`` is a causal LM or a
    :class:`PolicyScorer` around one.
    """
    scorer = model if isinstance(model, PolicyScorer) else PolicyScorer(model)
    width = batch.width
    if uses_flex(scorer.lm, attention):
        batch = batch.padded_to(flex.flex_width(width))  # [N, T'] T' a multiple of 128 (bounded compiles)
    mask, layout = attention_inputs(scorer.lm, batch, attention)
    selected = batch.trainable_mask if tokens == "trainable" else batch.prev_index >= 0  # [N, T]
    rows, cols = selected.nonzero(as_tuple=True)  # [M], [M]
    prev = batch.prev_index[rows, cols]  # [M]
    scored = scorer(
        batch.input_ids, batch.position_ids, mask, rows, prev, batch.input_ids[rows, cols], chunk_size, temperature, layout
    )  # [M]
    logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=scored.device)  # [N, T]
    return logprobs.index_put((rows, cols), scored)[:, :width]  # [N, T] (FlexAttention's padding dropped)


def sequence_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = 1024,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Plain causal rows: ``out[n, t] = log p(input_ids[n, t] | input_ids[n, :t])`` → float32 ``[N, T]``.

    ``attention_mask`` is the 2-D right-padding mask ``[N, T]`` (None: no padding). Position 0 and
    padding hold 0. ``chunk_size=None`` is the reference path: the model's own ``forward`` and
    full ``[N, T, V]`` float32 logits.
    """
    N, T = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()  # [N, T]
    scored = valid.clone()  # [N, T]
    scored[:, 0] = False
    if chunk_size is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()  # [N, T, V]
        logits = logits / temperature
        taken = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [N, T-1]
        logprobs = torch.cat([taken.new_zeros(N, 1), taken], dim=1)  # [N, T]
        return torch.where(scored, logprobs, torch.zeros_like(logprobs))
    hidden = decoder_hidden_states(model, input_ids, None, attention_mask)  # [N, T, H]
    rows, cols = scored.nonzero(as_tuple=True)  # [M], [M]
    taken = chunked_token_logprobs(
        model, hidden[rows, cols - 1], input_ids[rows, cols], chunk_size=chunk_size, temperature=temperature
    )  # [M]
    logprobs = torch.zeros((N, T), dtype=torch.float32, device=taken.device)  # [N, T]
    return logprobs.index_put((rows, cols), taken)  # [N, T]
