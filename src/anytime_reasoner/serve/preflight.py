"""The cheap checks of ``serve``, before torch and the web stack load: the model (unless it is the
embedded one) a causal LM whose tokenizer has the think markers as single tokens; the device; the
web stack installed."""

from __future__ import annotations

import importlib.util

from anytime_reasoner.config.serve import ServeConfig
from anytime_reasoner.config.train import EMBEDDED_MODEL
from anytime_reasoner.errors import UserError
from anytime_reasoner.models.checks import load_model_config
from anytime_reasoner.models.loading import check_device, codec_for, load_tokenizer


def preflight_serve(cfg: ServeConfig) -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"serve: needs {' and '.join(missing)}; install them with: pip install 'anytime-reasoner[serve]'")
    if cfg.model != EMBEDDED_MODEL:
        load_model_config(cfg.model, "model")
        codec_for(load_tokenizer(cfg.tokenizer or cfg.model), cfg.protocol())
    check_device(cfg.device, "device")
