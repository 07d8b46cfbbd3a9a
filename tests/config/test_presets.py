"""The presets ship as data (``configs/presets/*.yaml`` + ``index.yaml``): every file loads on its own
as a partial training config, the index lists each exactly once, and a stray file is refused."""

from pathlib import Path

import pytest

import anytime_reasoner
from anytime_reasoner.config import PRESET_SETS, PRESETS, ConfigError, TrainConfig, build_config, read_yaml
from anytime_reasoner.config.presets import load_presets

PRESET_DIR = Path(anytime_reasoner.__file__).parent / "configs" / "presets"
PRESET_FILES = sorted(p for p in PRESET_DIR.glob("*.yaml") if p.name != "index.yaml")


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_every_preset_file_is_a_valid_partial_training_config(path):
    data = read_yaml(path)
    assert set(data) <= {"rollout", "length", "ppo"}, "a preset sets the rollout knobs, length pieces and objective only"
    assert set(data.get("ppo", {})) <= {"loss_agg", "clip_eps", "clip_eps_high"}, "no scale (lr, batch) in a preset"
    cfg = build_config(TrainConfig, files=[path], overrides=["rollout.max_budget=108"])  # the file alone
    assert cfg == build_config(TrainConfig, preset=path.stem, overrides=["rollout.max_budget=108"])
    assert PRESETS[path.stem] == data


def test_index_lists_every_file_once_in_the_order_help_shows():
    index = read_yaml(PRESET_DIR / "index.yaml")
    assert sorted(index["presets"]) == sorted(p.stem for p in PRESET_FILES)
    assert len(set(index["presets"])) == len(index["presets"])
    assert list(PRESETS) == index["presets"]  # --help and error messages list them in this order
    assert PRESET_SETS["ablation"] == index["presets"][:8]  # the seed's eight experiments first


def test_a_preset_file_the_index_does_not_list_is_refused(tmp_path):
    (tmp_path / "index.yaml").write_text("presets: [a]\nsets: {}\n")
    (tmp_path / "a.yaml").write_text("rollout:\n  n_summary: 2\n")
    assert load_presets(tmp_path) == ({"a": {"rollout": {"n_summary": 2}}}, {})
    (tmp_path / "b.yaml").write_text("rollout:\n  n_summary: 3\n")
    with pytest.raises(RuntimeError, match=r"not in index.yaml \['b'\]"):
        load_presets(tmp_path)


def test_a_listed_preset_without_its_file_is_one_line(tmp_path):
    (tmp_path / "index.yaml").write_text("presets: [a]\nsets:\n  all: [a]\n")
    with pytest.raises(ConfigError, match="file not found"):
        load_presets(tmp_path)
