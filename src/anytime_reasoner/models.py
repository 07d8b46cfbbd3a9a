"""Device resolution and Hugging Face tokenizer / causal-LM loading, for ``train``, ``eval`` and
``ask``, with one-line :class:`UserError` messages.

The two model loaders share :func:`load_causal_lm`; they differ in what they load next to it:

- :func:`load_model_and_tokenizer` (training) picks the attention implementation for packed rows
  (``model.attention``: FlexAttention on CUDA, sdpa elsewhere) and moves the model to its device;
- :func:`load_for_inference` (evaluation, ``ask``) loads with the model's own attention, checks the
  tokenizer against the cut protocol first (cheap) and wraps the model in a generation engine.

The tokenizer must encode ``think_start`` and ``think_end`` as single tokens (the rollout stops the
thinking on ``</think>`` and the grader counts it); otherwise :class:`UserError` names the key.

Safe loading: nothing is executed or unpickled from a model folder. Tokenizers, configs and models
load with ``trust_remote_code=False`` (a model that needs its own code is refused, one line), and
weights only from safetensors files (``use_safetensors=True``: a pickled ``pytorch_model.bin`` is
refused, one line).
Before any weights load, the model's ``config.json`` is read (:mod:`anytime_reasoner.checks`): a
folder without it, or a model that is not a causal LM, is one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anytime_reasoner.errors import UserError

if TYPE_CHECKING:
    import torch

    from anytime_reasoner.config import EngineConfig, TrainConfig
    from anytime_reasoner.engine.base import GenerationEngine
    from anytime_reasoner.rollout.codec import TokenizerCodec
    from anytime_reasoner.rollout.protocol import AnytimeProtocol


@dataclass
class Loaded:
    model: Any  # the transformers model (None when the engine loads the weights itself: vLLM)
    tokenizer: Any
    codec: TokenizerCodec
    engine: GenerationEngine


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def resolve_device(device: str, key: str = "device") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a device is an error
    naming ``key`` (``model.device`` for training)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: cuda requested but no CUDA device is available; allowed here: cpu, auto")
    return device


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"tokenizer: cannot load {path!r} ({type(err).__name__}: {_first_line(err)})") from None


def codec_for(tokenizer: Any, protocol: AnytimeProtocol) -> TokenizerCodec:
    """The rollout's tokenizer facts; the error names the eval/ask keys (think_start/think_end)."""
    try:
        return protocol.codec(tokenizer)
    except UserError as err:
        raise UserError(str(err).replace("model.think_", "think_")) from None


def load_causal_lm(path: str, dtype: str, *, key: str = "model", attn_implementation: str | None = None) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path)`` in ``dtype`` (a torch dtype name), with the
    given attention implementation (None: the model's default), from safetensors weights and without
    remote code; a failure is one line naming ``key``."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "trust_remote_code": False, "use_safetensors": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as err:
        raise UserError(f"{key}: cannot load {path!r} as a causal LM ({type(err).__name__}: {_first_line(err)})") from None


def load_model_and_tokenizer(
    path: str, cfg: TrainConfig, device: torch.device, tokenizer: Any = None, model_config: Any = None
) -> tuple[Any, Any]:
    """Training: the model's config (a causal LM?), the tokenizer (``model.tokenizer`` or the
    model's; the think markers must be single tokens), the context check (the largest budget must
    fit, :func:`anytime_reasoner.checks.check_context`), then, all checks passed, the model in float32
    (the master weights; ``model.dtype`` is the compute dtype, see ``train.runtime``) with the
    attention implementation ``model.attention`` asks for on ``device``, moved there. ``tokenizer``:
    an already loaded one (e.g. to validate the data sets before the weights load); ``model_config``
    likewise (an already read one)."""
    from anytime_reasoner.checks import check_context, load_model_config
    from anytime_reasoner.train.logprobs import attn_implementation_for

    model_config = model_config if model_config is not None else load_model_config(path, "model.path")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model.tokenizer or path)
    cfg.protocol().codec(tokenizer)
    check_context(model_config, cfg, tokenizer)
    model = load_causal_lm(
        path, "float32", key="model.path", attn_implementation=attn_implementation_for(cfg.model.attention, device)
    )
    return model.to(device), tokenizer


def load_for_inference(
    model: str, tokenizer: Any, dtype: str, device: str, protocol: AnytimeProtocol, engine: EngineConfig | None = None
) -> Loaded:
    """Evaluation and ``ask``: the tokenizer (a path, None for the model's, or an already loaded
    one; checked against ``protocol`` first: cheap), then the engine of ``engine.backend``
    (default transformers): the model on its device in eval mode, wrapped; or vLLM on the folder."""
    from anytime_reasoner.checks import load_model_config
    from anytime_reasoner.config import EngineConfig
    from anytime_reasoner.engine.build import build_engine, check_engine, model_for_engine

    engine = engine or EngineConfig()
    tok = load_tokenizer(tokenizer or model) if tokenizer is None or isinstance(tokenizer, str) else tokenizer
    codec = codec_for(tok, protocol)
    where = resolve_device(device)
    path = model_for_engine(model, engine, where)
    check_engine(engine, load_model_config(path, "model"), where)
    lm = load_causal_lm(path, dtype).to(where).eval() if engine.backend == "hf" else None
    sampler = build_engine(engine, model=lm, model_path=path, dtype=dtype, device=where, pad_token_id=codec.pad_id)
    return Loaded(lm, tok, codec, sampler)
