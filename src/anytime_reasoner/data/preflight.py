"""The cheap checks of ``anytime-reasoner data``, run by the CLI before :mod:`anytime_reasoner.data.build`
is imported: the output path is writable and every source resolves with its reader installed."""

from __future__ import annotations

from anytime_reasoner.config import DataBuildConfig
from anytime_reasoner.data.sources import check_sources
from anytime_reasoner.errors import check_writable


def preflight_data(cfg: DataBuildConfig) -> None:
    check_writable(cfg.out, "out", folder=not cfg.out.endswith(".jsonl"))
    check_sources(cfg.sources, cfg.data_dir, None)
