"""Metric sinks: JSONL always; TensorBoard and Weights & Biases when installed and asked for."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{"reward": [a, b]}`` → ``{"reward/0": a, "reward/1": b}`` for scalar-only sinks."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        value = _plain(value)
        if isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, (int, float)):
                    flat[f"{key}/{i}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


class MetricLogger:
    """Writes one JSON object per step to ``out/metrics.jsonl``.

    Opening it for a run that starts after step ``start_step`` first keeps only the lines of steps
    ``<= start_step`` (dropping the lines of steps a killed run logged past its last checkpoint, and
    a torn last line), so a resumed run's file holds exactly one line per step.
    """

    def __init__(self, out: Path, sinks: Sequence[str], run_config: Mapping[str, Any] | None = None, start_step: int = 0):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        truncate_metrics(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = self._wandb = None
        if "tensorboard" in sinks:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard (the [logging] extra)

                self._tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("loggers: tensorboard is not installed; pip install tensorboard")
        if "wandb" in sinks:
            try:
                import wandb  # optional: wandb (the [logging] extra)

                self._wandb = wandb.init(project="anytime-reasoner", dir=str(out), config=dict(run_config or {}))
            except ImportError:
                log.warning("loggers: wandb is not installed; pip install wandb")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in flatten(metrics).items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(flatten(metrics), step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the well-formed lines of steps ``<= last_step`` (rewritten atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(line + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
