"""The generation backend named by ``engine.backend`` (:func:`build_engine`), its checks, and the
inference loader of evaluation and ``ask`` (:func:`load_for_inference`: tokenizer, model, engine).

``hf`` wraps the model object itself (:class:`~anytime_reasoner.engine.hf.TransformersEngine`:
training updates reach it by reference). ``vllm`` loads the model folder into a
:class:`~anytime_reasoner.engine.vllm.VLLMEngine` (its own copy of the weights, refreshed by the
trainer after every update: ``train.weight_sync``).

On CPU, vLLM has attention kernels for head sizes of 32 and up. The embedded tiny model's heads
are 24 wide, so for ``engine.backend=vllm`` on CPU :func:`model_for_engine` uses a copy of it
widened to 32 (``tasks.widen``: the same logits) next to the bootstrapped folder; any other model
with an unsupported head size is refused in one line.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anytime_reasoner.config import EngineConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.engine.base import GenerationEngine
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.engine.vllm import CPU_HEAD_SIZES, NOT_INSTALLED, VLLMSettings, check_head_size, create_engine
from anytime_reasoner.errors import UserError
from anytime_reasoner.models.checks import load_model_config
from anytime_reasoner.models.loading import codec_for, generation_eos_ids, load_causal_lm, load_tokenizer, resolve_device
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.tasks.bootstrap import MARKER_FILE
from anytime_reasoner.tasks.widen import head_size, widen_heads

WIDE_HEADS = 32


@dataclass
class Loaded:
    model: Any  # the transformers model (None when the engine loads the weights itself: vLLM)
    tokenizer: Any
    codec: TokenizerCodec
    engine: GenerationEngine


def check_engine(cfg: EngineConfig, model_config: Any, device: str) -> None:
    """Before any weights load: vLLM importable, and (CPU) a head size it has kernels for."""
    if cfg.backend != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise UserError(NOT_INSTALLED)

    check_head_size(model_config, device)


def model_for_engine(path: str, cfg: EngineConfig, device: str) -> str:
    """The model folder to train or sample: ``path``, or for vLLM on CPU the embedded tiny model
    widened to heads of 32 (made once, cached beside it)."""
    folder = Path(path)
    if cfg.backend != "vllm" or device != "cpu" or not (folder / MARKER_FILE).is_file():
        return path
    if head_size(load_model_config(path, "model.path")) in CPU_HEAD_SIZES:
        return path
    wide = folder.with_name(f"{folder.name}-heads{WIDE_HEADS}")
    if not (wide / "config.json").is_file():
        _write_widened(folder, wide)
    return str(wide)


def _write_widened(source: Path, target: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    widen_heads(model, WIDE_HEADS).save_pretrained(staging)
    AutoTokenizer.from_pretrained(source).save_pretrained(staging)
    try:
        staging.rename(target)  # atomic: concurrent jobs see the whole folder or none
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another job wrote it first


def build_engine(
    cfg: EngineConfig,
    *,
    model: Any,
    model_path: str,
    dtype: str,
    device: str,
    pad_token_id: int,
    seed: int = 0,
    distributed: bool = False,
) -> GenerationEngine:
    """The engine of ``cfg.backend``: ``model`` wrapped (hf) or ``model_path`` loaded into vLLM."""
    if cfg.backend == "hf":
        return TransformersEngine(model, pad_token_id=pad_token_id, max_held_bytes=int(cfg.held_cache_gib * 2**30))
    settings = VLLMSettings(dtype=dtype, seed=seed, **cfg.vllm_knobs())
    return create_engine(model_path, settings, device=device, distributed=distributed)


def load_for_inference(
    model: str, tokenizer: Any, dtype: str, device: str, protocol: AnytimeProtocol, engine: EngineConfig | None = None
) -> Loaded:
    """Evaluation and ``ask``: the tokenizer (a path, None for the model's, or an already loaded
    one; checked against ``protocol`` first: cheap), then the engine of ``engine.backend``
    (default transformers): the model on its device in eval mode, wrapped; or vLLM on the folder."""
    engine = engine or EngineConfig()
    tok = load_tokenizer(tokenizer or model) if tokenizer is None or isinstance(tokenizer, str) else tokenizer
    codec_for(tok, protocol)  # the think markers, before anything loads
    where = resolve_device(device)
    path = model_for_engine(model, engine, where)
    codec = codec_for(tok, protocol, generation_eos_ids(path))
    check_engine(engine, load_model_config(path, "model"), where)
    lm = load_causal_lm(path, dtype).to(where).eval() if engine.backend == "hf" else None
    sampler = build_engine(engine, model=lm, model_path=path, dtype=dtype, device=where, pad_token_id=codec.pad_id)
    return Loaded(lm, tok, codec, sampler)
