"""Checkpoints: ``out/checkpoints/step_N/`` holds

- a ``save_pretrained`` folder of the model in the compute dtype (``model.dtype``) and the
  tokenizer, loadable by ``AutoModelForCausalLM.from_pretrained`` as is (with LoRA: the adapter
  folder, loadable by peft), written by rank 0;
- ``train_state/``: the float32 master weights (the trained ones: adapter weights only under
  LoRA) and the optimizer state as a ``torch.distributed.checkpoint`` (DCP) folder, each rank
  writing its shards; resume reads it, on any world size (DCP reshards on load);
- ``trainer_state.json``: steps done, seed, world size, the data pass (epoch) of the next step,
  and the resolved run config;
- ``rollout_policy/v{n}.safetensors`` (``trainer.async_level = k ≥ 1``): the policies after
  steps N − k … N − 1, which steps N + 1 … N + k sample with (``train.async_rollouts``), in the
  compute dtype under Hugging Face names;
- ``rng_rank{r}.pt``: each rank's torch generators (CPU, and its own CUDA device's: a rank restores
  only the device it runs on, so a run resumes on fewer visible GPUs) and Python ``random``'s.
  Every sampling stream is derived from (seed, step, phase) (``seeding``), so these states decide
  nothing today; they are restored so that code drawing from the global generators stays exact.

``resume=auto`` continues from the newest complete checkpoint, refusing one whose config differs in
a key that changes training (:func:`config_changes`; ``resume=force`` continues anyway). A
checkpoint is written to a temporary folder and renamed when complete, so a crash (even SIGKILL)
mid-write never leaves a checkpoint that resume would pick up; ``trainer.keep_checkpoints`` prunes
the oldest complete ones after each write.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict

from anytime_reasoner.config.base import flatten
from anytime_reasoner.errors import UserError
from anytime_reasoner.train.lora import export_merged, is_lora, save_adapter
from anytime_reasoner.train.runtime import Runtime

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
TRAIN_STATE_DIR = "train_state"
POLICY_DIR = "rollout_policy"
PREFIX = "lm."  # the PolicyScorer's attribute holding the model


# Keys that may differ between a run and its resume: where and how long it runs, what it logs and
# saves, and validation (which draws its own stream and never feeds training).
RESUMABLE_CHANGES = (
    "trainer.steps",
    "trainer.out",
    "trainer.resume",
    "trainer.progress",
    "trainer.loggers",
    "trainer.weight_transfer",
    "trainer.max_worker_restarts",
)
RESUMABLE_PREFIXES = (
    "trainer.save_every",
    "trainer.keep_checkpoints",
    "trainer.val",
    "data.val",
    "data.data_dir",
    "model.device",
)


@dataclass
class TrainerState:
    step: int  # RL steps completed
    seed: int
    world_size: int = 1
    epoch: int | None = None  # the pass over a finite training set that step + 1 reads (None: a stream)
    config: dict[str, Any] | None = None  # the resolved run config (config.dump)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two dumped configs, except the resumable ones,
    as ``key (saved → current)``."""
    flat_saved, flat_current = flatten(saved), flatten(current)
    changed = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        if key in RESUMABLE_CHANGES or key.startswith(RESUMABLE_PREFIXES):
            continue
        if flat_saved.get(key) != flat_current.get(key):
            changed.append(f"{key} ({flat_saved.get(key)!r} → {flat_current.get(key)!r})")
    return changed


def _options(scorer: torch.nn.Module, **kwargs: Any) -> StateDictOptions:
    """Only trained parameters go into ``train_state`` (LoRA: the adapter)."""
    frozen = any(not p.requires_grad for p in scorer.parameters())
    return StateDictOptions(ignore_frozen_params=frozen, strict=not frozen, **kwargs)


def save_checkpoint(
    out: Path,
    state: TrainerState,
    scorer: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    policies: dict[int, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``out/checkpoints/step_{state.step}`` (every rank calls this), with the rollout
    ``policies`` (version → tensors) of an asynchronous run."""
    root = out / "checkpoints"
    final = root / f"step_{state.step}"
    tmp = root / f".tmp_step_{state.step}"
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.barrier()
    model_state, optim_state = get_state_dict(scorer, optimizer, options=_options(scorer))
    dcp.save(
        {"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / TRAIN_STATE_DIR), no_dist=not runtime.distributed
    )
    export_model(scorer, tmp, runtime)
    torch.save(rng_state(runtime.device), tmp / f"rng_rank{runtime.rank}.pt")
    runtime.barrier()
    if runtime.is_main:
        tokenizer.save_pretrained(tmp)
        for version, tensors in (policies or {}).items():
            (tmp / POLICY_DIR).mkdir(exist_ok=True)
            save_file(tensors, str(tmp / POLICY_DIR / f"v{version}.safetensors"))
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")  # last: marks it complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    runtime.barrier()
    return final


def prune_checkpoints(out: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints (``keep=0``: none); returns the deleted."""
    done = sorted(_complete(out), key=_step_of)
    doomed = done[:-keep] if keep else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The global generators: torch's CPU one, the CUDA generator of ``device`` (this rank's own, when
    it is a CUDA device; never every visible device's), Python ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def load_rng_state(path: Path, rank: int, device: torch.device | None = None) -> None:
    """Restore this rank's generators from a checkpoint (if it holds them): the CPU one, Python's, and
    the saved CUDA state into ``device``, the one this rank runs on now (whatever its index was when
    saved, and however many devices are visible now)."""
    file = path / f"rng_rank{rank}.pt"
    if not file.is_file():
        return
    state = torch.load(file, weights_only=True)
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if isinstance(cuda, torch.Tensor) and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def export_model(scorer: torch.nn.Module, path: Path, runtime: Runtime, *, merged: bool = False) -> None:
    """``save_pretrained`` of ``scorer.lm`` into ``path`` in the compute dtype, written by rank 0
    from the full state gathered over ranks. LoRA: the adapter folder, or with ``merged`` the
    merged model plus the adapter in ``path/adapter``."""
    lm: Any = scorer.lm
    options = StateDictOptions(full_state_dict=True, cpu_offload=runtime.distributed)
    full: dict[str, Any] = get_model_state_dict(scorer, options=options)  # collective under FSDP
    if runtime.is_main:
        state = {k.removeprefix(PREFIX): v for k, v in full.items()}  # keys of lm.state_dict()
        if is_lora(lm) and merged:
            export_merged(lm, path, dtype=runtime.compute_dtype, state=state)
            save_adapter(lm, path / "adapter", state)
        elif is_lora(lm):
            save_adapter(lm, path, state)
        else:
            _save_full(lm, path, runtime.compute_dtype, state)
    runtime.barrier()


def _save_full(lm: Any, path: Path, dtype: torch.dtype, state: dict[str, torch.Tensor]) -> None:
    """``lm.save_pretrained`` of ``state`` with every floating tensor cast to ``dtype`` (and the config saying so)."""
    copies: dict[int, torch.Tensor] = {}  # one copy per tensor: tied weights stay one tensor
    weights = {}
    for key, value in state.items():
        if value.is_floating_point():
            if id(value) not in copies:
                copies[id(value)] = value.to(device="cpu", dtype=dtype)
            value = copies[id(value)]
        weights[key] = value
    lm.save_pretrained(path, state_dict=weights)
    config = copy.deepcopy(lm.config)  # save_pretrained writes the dtype of the weights in memory
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(path)


def _complete(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return [p for p in root.glob("step_*") if (p / STATE_FILE).is_file() and p.name.split("_")[1].isdigit()]


def _step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in ``out/checkpoints`` (its trainer state written last)."""
    return max(_complete(out), key=_step_of, default=None)


def has_train_state(path: Path) -> bool:
    """Whether the checkpoint holds a complete DCP folder (its metadata is written last)."""
    return (path / TRAIN_STATE_DIR / ".metadata").is_file()


def load_trainer_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text(encoding="utf-8")))


def load_train_state(path: Path, scorer: torch.nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime) -> None:
    """Master weights and optimizer state from ``path/train_state`` into ``scorer`` and ``optimizer``
    (both built, and sharded when distributed, as for a fresh run), and this rank's generators."""
    if not has_train_state(path):
        raise UserError(
            f"trainer.resume: {path} has no {TRAIN_STATE_DIR}/ to resume from; remove it, or set trainer.resume=never"
        )
    options = _options(scorer)
    model_state, optim_state = get_state_dict(scorer, optimizer, options=options)
    loaded: dict[str, Any] = {"model": model_state, "optim": optim_state}
    dcp.load(loaded, checkpoint_id=str(path / TRAIN_STATE_DIR), no_dist=not runtime.distributed)
    set_state_dict(scorer, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"], options=options)
    load_rng_state(path, runtime.rank, runtime.device)


def load_rollout_policies(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    """The rollout policies a checkpoint holds (version → tensors; empty for a synchronous run's)."""
    folder = path / POLICY_DIR
    if not folder.is_dir():
        return {}
    return {int(f.stem.removeprefix("v")): load_file(str(f)) for f in sorted(folder.glob("v*.safetensors"))}
