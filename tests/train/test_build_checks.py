"""``train`` checks its data sources before the model loads: one line naming what is missing."""

import importlib.util

import pytest

from anytime_reasoner.config import TrainConfig, build_config
from anytime_reasoner.errors import UserError
from anytime_reasoner.train.build import build_trainer

# a model path that cannot load: reaching it would raise a different error (model.path: ...)
NO_MODEL = "model.path=/nonexistent/model"


def _cfg(*overrides):
    return build_config(TrainConfig, overrides=[NO_MODEL, "model.device=cpu", *overrides])


def test_hub_dataset_without_the_extra_fails_before_the_model_loads(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(UserError, match=r"^data\.train: owner/dataset: reading it needs the optional datasets package .*\[hub\]"):
        build_trainer(_cfg("data.train=owner/dataset"))


def test_named_benchmark_without_a_data_dir_fails_before_the_model_loads(monkeypatch, tmp_path):
    monkeypatch.delenv("ANYTIME_REASONER_DATA", raising=False)
    train = tmp_path / "train.jsonl"
    train.write_text('{"problem": "1+1?", "answer": "2"}\n')
    with pytest.raises(UserError, match=r"^data\.val: data_dir: no data directory; pass data_dir=DIR"):
        build_trainer(_cfg(f"data.train={train}", "data.val=aime,amc"))


def test_missing_file_in_the_data_dir(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(UserError, match=r"^data\.val: aime: .*test/aime\.json not found in the data directory"):
        build_trainer(_cfg("data.val=aime", f"data.data_dir={tmp_path}"))
