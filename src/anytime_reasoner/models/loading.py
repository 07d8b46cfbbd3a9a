"""Device resolution and Hugging Face tokenizer / causal-LM loading, for ``train``, ``eval`` and
``ask``, with one-line :class:`UserError` messages.

The two model loaders share :func:`load_causal_lm`; they differ in what they load next to it:

- :func:`load_model_and_tokenizer` (training) loads with the attention implementation the trainer
  names for its packed rows (``train.logprobs.attn_implementation_for``) and moves the model to its
  device;
- :func:`anytime_reasoner.models.engines.load_for_inference` (evaluation, ``ask``) loads with the
  model's own attention, checks the tokenizer against the cut protocol first (cheap) and wraps the
  model in a generation engine.

The tokenizer must encode ``think_start`` and ``think_end`` as single tokens (the rollout stops the
thinking on ``</think>`` and the grader counts it); otherwise :class:`UserError` names the key.

Safe loading: nothing is executed or unpickled from a model folder. Tokenizers, configs and models
load with ``trust_remote_code=False`` (a model that needs its own code is refused, one line), and
weights only from safetensors files (``use_safetensors=True``: a pickled ``pytorch_model.bin`` is
refused, one line).
Before any weights load, the model's ``config.json`` is read (:mod:`anytime_reasoner.models.checks`):
a folder without it, or a model that is not a causal LM, is one line naming the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anytime_reasoner.config import TrainConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.errors import UserError, first_line
from anytime_reasoner.models.checks import check_context, load_model_config
from anytime_reasoner.protocol import AnytimeProtocol

if TYPE_CHECKING:
    import torch  # heavy: only the annotations name it; the functions import it when they run


def resolve_device(device: str, key: str = "device") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a device is an error
    naming ``key`` (``model.device`` for training)."""
    import torch  # heavy: torch loads only once a device is resolved

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: cuda requested but no CUDA device is available; allowed here: cpu, auto")
    return device


def check_device(device: str, key: str) -> None:
    """A preflight check: ``cuda`` asked for and no CUDA device is one line naming ``key`` (torch
    is only imported for ``cuda``)."""
    if device == "cuda":
        resolve_device(device, key=key)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer  # heavy: transformers

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"tokenizer: cannot load {path!r} ({type(err).__name__}: {first_line(err)})") from None


def codec_for(tokenizer: Any, protocol: AnytimeProtocol, extra_eos_ids: tuple[int, ...] = ()) -> TokenizerCodec:
    """The rollout's tokenizer facts; the error names the eval/ask keys (think_start/think_end)."""
    try:
        return TokenizerCodec.for_protocol(tokenizer, protocol, extra_eos_ids)
    except UserError as err:
        raise UserError(str(err).replace("model.think_", "think_")) from None


def generation_eos_ids(path: str) -> tuple[int, ...]:
    """The EOS ids the model's ``generation_config.json`` lists (one id or several; none without the
    file): an engine that applies the generation config stops on each of them."""
    from transformers import GenerationConfig  # heavy: transformers

    try:
        config = GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return ()
    eos = config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return tuple(int(i) for i in ids)


def load_causal_lm(path: str, dtype: str, *, key: str = "model", attn_implementation: str | None = None) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path)`` in ``dtype`` (a torch dtype name), with the
    given attention implementation (None: the model's default), from safetensors weights and without
    remote code; a failure is one line naming ``key``."""
    import torch  # heavy: torch and transformers load with the weights
    from transformers import AutoModelForCausalLM  # heavy: transformers

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "trust_remote_code": False, "use_safetensors": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as err:
        raise UserError(f"{key}: cannot load {path!r} as a causal LM ({type(err).__name__}: {first_line(err)})") from None


def load_model_and_tokenizer(
    path: str,
    cfg: TrainConfig,
    device: torch.device,
    attn_implementation: str | None,
    tokenizer: Any = None,
    model_config: Any = None,
) -> tuple[Any, Any]:
    """Training: the model's config (a causal LM?), the tokenizer (``model.tokenizer`` or the
    model's; the think markers must be single tokens), the context check (the largest budget must
    fit, :func:`anytime_reasoner.models.checks.check_context`), then, all checks passed, the model in
    float32 (the master weights; ``model.dtype`` is the compute dtype, see ``train.runtime``) with
    ``attn_implementation`` (the trainer's choice for ``model.attention`` on ``device``), moved
    there. ``tokenizer``: an already loaded one (e.g. to validate the data sets before the weights
    load); ``model_config`` likewise (an already read one)."""
    model_config = model_config if model_config is not None else load_model_config(path, "model.path")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model.tokenizer or path)
    TokenizerCodec.for_protocol(tokenizer, cfg.protocol())
    check_context(model_config, cfg, tokenizer)
    model = load_causal_lm(path, "float32", key="model.path", attn_implementation=attn_implementation)
    return model.to(device), tokenizer
