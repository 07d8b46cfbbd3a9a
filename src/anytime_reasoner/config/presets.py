"""The training presets, shipped as data: ``configs/presets/<name>.yaml``, one file per preset, and
``configs/presets/index.yaml`` (their order, and the named lists of ``compare presets=NAME``).

A preset is a partial :class:`~anytime_reasoner.config.train.TrainConfig` merged under the user's
``--config`` files and ``key=value`` overrides: the seed's eight experiments set the five rollout
knobs (docs/ALGORITHM.md §8); the budget-aware methods add their ``length.*`` pieces to GRPO's
rollout, and train as their papers do (``rollout.advantage_norm``, ``ppo.loss_agg``, DAPO's
``ppo.clip_eps_high`` and ``rollout.dynamic_sampling``; docs/BASELINES.md). No preset sets a scale. Read once at import; the mappings below are not to be changed.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from anytime_reasoner.config.files import read_yaml

PRESET_DIR = files("anytime_reasoner") / "configs" / "presets"


def load_presets(directory: Traversable | Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """``(presets in index order, named lists)`` from a presets folder. A preset file the index does
    not list, or a named list with a preset that has no file, is a packaging error (raised at
    import); a listed preset without its file is :class:`ConfigError` from :func:`read_yaml`."""
    index = read_yaml(str(directory / "index.yaml"))
    presets = {name: read_yaml(str(directory / f"{name}.yaml")) for name in index["presets"]}
    shipped = sorted(p.name.removesuffix(".yaml") for p in directory.iterdir() if p.name.endswith(".yaml"))
    stray = [name for name in shipped if name != "index" and name not in presets]
    sets: dict[str, list[str]] = {key: list(value) for key, value in index["sets"].items()}
    unknown = [name for members in sets.values() for name in members if name not in presets]
    if stray or unknown:
        raise RuntimeError(f"{directory}: preset files not in index.yaml {stray}; named lists with unknown presets {unknown}")
    return presets, sets


PRESETS, PRESET_SETS = load_presets(PRESET_DIR)

# The budget-aware methods' ``length.*`` pieces (docs/BASELINES.md), by preset.
BASELINE_PIECES: dict[str, dict[str, Any]] = {name: dict(p["length"]) for name, p in PRESETS.items() if "length" in p}
