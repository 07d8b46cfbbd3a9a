"""LoRA adapters (via peft) on a Hugging Face causal LM: wrap, save, resume, export merged.

:func:`apply_lora` wraps a model in a ``peft.PeftModel`` whose only trainable tensors are the
adapter matrices ``lora_A [r, in]`` and ``lora_B [out, r]`` of each targeted ``nn.Linear``; the
layer computes ``W x + (alpha / r) · B A x``. ``B`` starts at zero, so the wrapped model computes
exactly what the base model does until the first optimizer step. The wrapped model still answers
``get_decoder()``, ``get_output_embeddings()``, ``config`` and ``generate`` (peft forwards them to
the base model), so :mod:`anytime_reasoner.train.logprobs` and the rollout engine take it as is.

:func:`save_adapter` / :func:`load_adapter` write and read peft's adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) for checkpoints and resume;
:func:`export_merged` writes a plain transformers folder with ``W + (alpha / r) · B A`` folded in,
loadable by ``AutoModelForCausalLM.from_pretrained`` without peft.

Departures from peft's defaults: ``lora_dropout`` is fixed at 0, because PPO's ratio
``exp(logp_new - logp_old)`` needs the old and the new log-probs to come from the same network
(dropout would make them differ at ratio 1 already); ``bias="none"`` (only ``A`` and ``B`` train).
:func:`export_merged` does not use peft's ``merge_adapter`` / ``unmerge_adapter``: those add and
then subtract the delta in place, which leaves the live base weights off by a rounding error
(up to an ulp of bfloat16 for a bfloat16 model), so a run that exports mid-training would no
longer equal one that does not. The merged weights are computed out of place instead, one layer
at a time, and copied to host memory: the live model is left bit-identical, the accelerator holds
one extra layer at a time, and host memory one copy of the model (as saving needs anyway).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from anytime_reasoner.errors import UserError

if TYPE_CHECKING:
    from peft import PeftModel  # optional: peft (the [lora] extra)
    from transformers import PreTrainedModel

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MISSING_PEFT = "model.lora_rank: LoRA needs peft; install the extra: pip install 'anytime-reasoner[lora]'"


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft 0.21 triggers by calling transformers' deprecated
    ``is_gradient_checkpointing`` when it wraps a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _linear_names(model: torch.nn.Module) -> list[str]:
    """Distinct last name components of the ``nn.Linear`` modules in ``model``, sorted."""
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def _check_targets(model: torch.nn.Module, target_modules: Sequence[str]) -> None:
    """Raise :class:`UserError` unless some module name equals or ends with ``.<target>`` (peft's rule)."""
    names = [name for name, _ in model.named_modules()]
    if not any(name == t or name.endswith(f".{t}") for t in target_modules for name in names):
        raise UserError(
            f"model.lora_target_modules: none of {list(target_modules)} is a module of {type(model).__name__}; "
            f"its Linear modules are {_linear_names(model)}"
        )


def apply_lora(model: PreTrainedModel, *, rank: int, alpha: float, target_modules: Sequence[str]) -> PeftModel:
    """Wrap ``model`` (modified in place: peft swaps the targeted layers) in LoRA adapters of
    rank ``rank`` and scale ``alpha / rank``; only the adapter tensors require grad."""
    try:
        from peft import LoraConfig, get_peft_model  # optional: peft (the [lora] extra)
    except ImportError as e:
        raise UserError(_MISSING_PEFT) from e
    _check_targets(model, target_modules)
    # peft annotates lora_alpha as int but only ever computes alpha / r, so a float is fine
    config = LoraConfig(
        r=rank,
        lora_alpha=cast(int, alpha),
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with _quiet_peft():
        peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        param.requires_grad_("lora_" in name)
    return peft_model


def is_lora(model: object) -> bool:
    """Whether ``model`` is a peft model (False when peft is not installed)."""
    try:
        from peft import PeftModel  # optional: peft (the [lora] extra)
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def trainable_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter tensors only, keyed as in the adapter file (``…q_proj.lora_A.weight``, no
    adapter name); the tensors share storage with the live parameters."""
    from peft import get_peft_model_state_dict  # optional: peft (the [lora] extra)

    return get_peft_model_state_dict(model)


def save_adapter(model: PeftModel, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.
    ``state``: the model's full state (keys of ``model.state_dict()``) when its live tensors are
    sharded (FSDP2); default the live tensors."""
    if state is None:
        model.save_pretrained(str(path))
    else:
        model.save_pretrained(str(path), state_dict=state)


def load_adapter(model_base: PreTrainedModel, path: str | Path, trainable: bool = True) -> PeftModel:
    """Wrap ``model_base`` (modified in place) in the adapter saved at ``path``; ``trainable``
    leaves the adapter tensors requiring grad (resume), else none does (inference)."""
    try:
        from peft import PeftModel  # optional: peft (the [lora] extra)
    except ImportError as e:
        raise UserError(_MISSING_PEFT) from e
    with _quiet_peft():
        peft_model = PeftModel.from_pretrained(model_base, str(path), is_trainable=trainable)
    for name, param in peft_model.named_parameters():
        param.requires_grad_(trainable and "lora_" in name)
    return peft_model


def merged_tensors(
    model: PeftModel, dtype: torch.dtype | None = None, state: Mapping[str, torch.Tensor] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the base model with the active adapters folded in (``W + scale · B A``),
    under the plain model's key names, one at a time, on the tensors' own device (cast to ``dtype``
    if given; a tensor already in that dtype is the live one, not a copy); ``model`` is not touched.

    ``state``: the full state of ``model`` (keys of ``model.state_dict()``) when its live tensors
    are sharded (FSDP2); default the live tensors. Only the scales are read from the live layers.
    A tensor under two names (tied embeddings) is yielded under each.
    """
    with torch.no_grad():
        for key, value, _ in _merged_items(model, state):
            yield key, value.to(dtype=dtype or value.dtype)


def merged_state_dict(
    model: PeftModel, dtype: torch.dtype | None = None, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """:func:`merged_tensors` as a dict on the CPU. Tensors that are one tensor in ``state`` (e.g.
    tied embeddings) stay one, so saving drops the alias."""
    copies: dict[tuple[int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}  # a tensor's view → host copy
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, value, merged in _merged_items(model, state):
            if merged:
                out[key] = value.to(device="cpu", dtype=dtype or value.dtype)
                continue
            view = (value.data_ptr(), tuple(value.shape), value.stride())  # ``state`` keeps the source alive
            if view not in copies:
                copies[view] = value.to(device="cpu", dtype=dtype or value.dtype)
            out[key] = copies[view]
    return out


def _merged_items(model: PeftModel, state: Mapping[str, torch.Tensor] | None) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """``(plain name, tensor, merged?)``: merged weights are new tensors, the rest ``state``'s own."""
    from peft.tuners.lora import LoraLayer  # optional: peft (the [lora] extra)

    base = model.get_base_model()
    layers: dict[str, Any] = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    prefix = "base_model.model."
    if state is None:
        state = {prefix + k: v for k, v in base.state_dict().items()}
    for full_key in state:  # values are read only when needed: ``state`` may gather them on access
        key = full_key.removeprefix(prefix)
        if "lora_" in key:
            continue
        value = state[full_key]
        owner, sep, leaf = key.partition(".base_layer.")
        if sep and leaf == "weight":
            yield f"{owner}.{leaf}", _merge(layers[owner], owner, value, state, prefix), True
        else:
            yield (f"{owner}.{leaf}" if sep else key), value, False


def _merge(layer: Any, owner: str, weight: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """``W + Σ_adapters scale · B A`` for the base weight ``W [out, in]`` of ``layer``."""
    if layer.merged or getattr(layer, "fan_in_fan_out", False) or any(a in layer.lora_variant for a in layer.active_adapters):
        raise ValueError(f"{owner}: cannot export a layer that is merged, transposed or not plain LoRA")
    merged = weight.clone()
    for adapter in layer.active_adapters:
        lora_a = state[f"{prefix}{owner}.lora_A.{adapter}.weight"].to(weight)  # [r, in]
        lora_b = state[f"{prefix}{owner}.lora_B.{adapter}.weight"].to(weight)  # [out, r]
        merged += (lora_b @ lora_a) * layer.scaling[adapter]
    return merged


def export_merged(
    model: PeftModel, path: str | Path, *, dtype: torch.dtype | None = None, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Write a plain transformers folder (config, generation config, safetensors) of the merged
    model, loadable by ``AutoModelForCausalLM.from_pretrained`` without peft; the training model
    is left bit-identical. The merged weights match the adapted model's outputs to float rounding
    (log-probs within 1e-5 in float32); ``dtype`` casts the saved weights (and the config's dtype);
    ``state`` as for :func:`merged_state_dict`."""
    base = cast("PreTrainedModel", model.get_base_model())
    base.save_pretrained(str(path), state_dict=merged_state_dict(model, dtype, state))
    if dtype is not None:
        config = copy.deepcopy(base.config)
        config.dtype = str(dtype).removeprefix("torch.")
        config.save_pretrained(str(path))
