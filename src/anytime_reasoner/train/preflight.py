"""The cheap checks of ``anytime-reasoner train``, run by the CLI after the configuration validates and
before :mod:`anytime_reasoner.train.build` (torch, transformers) is imported.

The model checks (``config.json``, tokenizer, context length) run later, in
:func:`anytime_reasoner.models.loading.load_model_and_tokenizer`, once the model path is resolved
(``tiny`` is bootstrapped first) and before the weights load.
"""

from __future__ import annotations

from anytime_reasoner.config import TrainConfig
from anytime_reasoner.errors import check_writable
from anytime_reasoner.models.loading import check_device


def preflight_train(cfg: TrainConfig) -> None:
    """``train``: the output folder is writable and a requested CUDA device exists."""
    check_writable(cfg.trainer.out, "trainer.out")
    check_device(cfg.model.device, "model.device")
