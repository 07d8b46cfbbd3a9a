"""Checkpoints: ``out/checkpoints/step_N/`` holds a ``save_pretrained`` model and tokenizer (loadable
by ``AutoModelForCausalLM.from_pretrained`` as is — no merge step), the optimizer state and the
trainer state. ``resume=auto`` continues from the newest complete one.

A checkpoint is written to a temporary folder and renamed when complete, so a crash mid-write
never leaves a checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class TrainerState:
    step: int  # RL steps completed
    seed: int


def save_checkpoint(out: Path, state: TrainerState, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer) -> Path:
    root = out / "checkpoints"
    final = root / f"step_{state.step}"
    tmp = root / f".tmp_step_{state.step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def load_trainer_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text(encoding="utf-8")))


def load_optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
