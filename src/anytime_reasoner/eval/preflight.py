"""The cheap checks of ``eval``, ``ask`` and ``plot``, run by the CLI after the configuration validates
and before the command's own module (torch, transformers, matplotlib) is imported: output paths
writable, data sources found, the model a causal LM whose tokenizer has the think markers as single
tokens, the largest budget within its context. Nothing here loads weights (docs/ERRORS.md).
"""

from __future__ import annotations

from anytime_reasoner.config import AskConfig, EvalConfig, PlotConfig
from anytime_reasoner.data.sources import check_sources
from anytime_reasoner.errors import check_writable
from anytime_reasoner.models.checks import check_context, load_model_config
from anytime_reasoner.models.loading import check_device, codec_for, load_tokenizer


def _preflight_generation(cfg: EvalConfig | AskConfig) -> None:
    """``eval`` / ``ask``: the model is a causal LM, its tokenizer has the think markers as single
    tokens, the largest budget fits its context; then the device."""
    model_config = load_model_config(cfg.model, "model")
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    codec_for(tokenizer, cfg.protocol())
    check_context(model_config, cfg, tokenizer)
    check_device(cfg.device, "device")


def preflight_eval(cfg: EvalConfig) -> None:
    check_writable(cfg.out, "out")
    check_sources(cfg.data, cfg.data_dir, "data")
    _preflight_generation(cfg)


def preflight_ask(cfg: AskConfig) -> None:
    _preflight_generation(cfg)


def preflight_plot(cfg: PlotConfig) -> None:
    check_writable(cfg.out, "out", folder=False)
