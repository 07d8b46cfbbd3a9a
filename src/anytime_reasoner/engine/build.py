"""``build_engine``: the generation backend named by ``engine.backend``, and its checks.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anytime_reasoner.errors import UserError

if TYPE_CHECKING:
    from anytime_reasoner.config import EngineConfig
    from anytime_reasoner.engine.base import GenerationEngine

WIDE_HEADS = 32


def check_engine(cfg: EngineConfig, model_config: Any, device: str) -> None:
    """Before any weights load: vLLM importable, and (CPU) a head size it has kernels for."""
    if cfg.backend != "vllm":
        return
    from anytime_reasoner.engine.vllm import NOT_INSTALLED, check_head_size

    if importlib.util.find_spec("vllm") is None:
        raise UserError(NOT_INSTALLED)

    check_head_size(model_config, device)


def model_for_engine(path: str, cfg: EngineConfig, device: str) -> str:
    """The model folder to train or sample: ``path``, or for vLLM on CPU the embedded tiny model
    widened to heads of 32 (made once, cached beside it)."""
    from anytime_reasoner.tasks.bootstrap import MARKER_FILE

    folder = Path(path)
    if cfg.backend != "vllm" or device != "cpu" or not (folder / MARKER_FILE).is_file():
        return path
    from anytime_reasoner.checks import load_model_config
    from anytime_reasoner.engine.vllm import CPU_HEAD_SIZES
    from anytime_reasoner.tasks.widen import head_size

    if head_size(load_model_config(path, "model.path")) in CPU_HEAD_SIZES:
        return path
    wide = folder.with_name(f"{folder.name}-heads{WIDE_HEADS}")
    if not (wide / "config.json").is_file():
        _write_widened(folder, wide)
    return str(wide)


def _write_widened(source: Path, target: Path) -> None:
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from anytime_reasoner.tasks.widen import widen_heads

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
        from anytime_reasoner.engine.hf import TransformersEngine

        return TransformersEngine(model, pad_token_id=pad_token_id)
    from anytime_reasoner.engine.vllm import VLLMSettings, create_engine

    settings = VLLMSettings(dtype=dtype, seed=seed, **cfg.model_dump(exclude={"backend"}))  # the engine.* knobs by name
    return create_engine(model_path, settings, device=device, distributed=distributed)
