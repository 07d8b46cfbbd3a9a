"""Typed configuration, validated once at load, split by concern:

- :mod:`~anytime_reasoner.config.base`: the strict base model, :class:`ConfigError` and the shared
  field parsers (lists, budget grids, priors, cap schedules, the cut protocol's keys);
- one module per command's schema: :mod:`~anytime_reasoner.config.train` (``train``),
  :mod:`~anytime_reasoner.config.eval` (``eval``, ``ask``), :mod:`~anytime_reasoner.config.runs`
  (``demo``, ``compare``), :mod:`~anytime_reasoner.config.serve` (``serve``), :mod:`~anytime_reasoner.config.data`, :mod:`~anytime_reasoner.config.grade`,
  :mod:`~anytime_reasoner.config.plot`, and :mod:`~anytime_reasoner.config.engine` (``engine.*``);
- :mod:`~anytime_reasoner.config.presets`: the presets, shipped as YAML files;
- :mod:`~anytime_reasoner.config.loading`: presets, files and ``key=value`` overrides merged and
  validated into one schema (:func:`build_config`), one-line errors.

Only pydantic, PyYAML and the layers below (``algo``, ``protocol``, ``errors``) are imported, so the
CLI validates before torch is loaded. Every name is importable from ``anytime_reasoner.config``.
"""

from anytime_reasoner.config.base import ConfigError, StrictModel
from anytime_reasoner.config.data import DataBuildConfig
from anytime_reasoner.config.engine import EngineConfig
from anytime_reasoner.config.eval import BENCHMARK_NAMES, AskConfig, EvalConfig, GenerationConfig
from anytime_reasoner.config.files import read_yaml
from anytime_reasoner.config.grade import GradeConfig
from anytime_reasoner.config.loading import SEED_ALIASES, build_config, deep_merge, dump, format_error, parse_overrides, validate
from anytime_reasoner.config.plot import PlotConfig
from anytime_reasoner.config.presets import BASELINE_PIECES, PRESET_SETS, PRESETS
from anytime_reasoner.config.runs import BootstrapConfig, CompareConfig, DemoConfig, RunScale
from anytime_reasoner.config.serve import ServeConfig
from anytime_reasoner.config.train import (
    LORA_TARGETS,
    DataConfig,
    LengthConfig,
    ModelConfig,
    PPOConfig,
    RolloutConfig,
    TrainConfig,
    TrainerConfig,
)

__all__ = [
    "ServeConfig",
    "BASELINE_PIECES",
    "BENCHMARK_NAMES",
    "LORA_TARGETS",
    "PRESETS",
    "PRESET_SETS",
    "SEED_ALIASES",
    "AskConfig",
    "BootstrapConfig",
    "CompareConfig",
    "ConfigError",
    "DataBuildConfig",
    "DataConfig",
    "DemoConfig",
    "EngineConfig",
    "EvalConfig",
    "GenerationConfig",
    "GradeConfig",
    "LengthConfig",
    "ModelConfig",
    "PPOConfig",
    "PlotConfig",
    "RolloutConfig",
    "RunScale",
    "StrictModel",
    "TrainConfig",
    "TrainerConfig",
    "build_config",
    "deep_merge",
    "dump",
    "format_error",
    "parse_overrides",
    "read_yaml",
    "validate",
]
