"""Resume is exact: a run stopped after step 2 and resumed to step 4 ends with the same weights,
bit for bit, as an uninterrupted 4-step run (every random stream is derived from (seed, step, phase),
and the checkpoint holds the weights and the optimizer state)."""

import pytest
import torch

from tests.train.test_trainer_smoke import _build, _config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]  # slow: trains or generates with a tiny model


def _fit(cfg):
    trainer = _build(cfg)
    try:
        trainer.fit()
    finally:
        trainer.verifier.close()
    return trainer


def test_stop_and_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    straight = _fit(_config(tiny_model_dir, tmp_path / "straight", steps=4, **{"trainer.val_every": 0}))
    _fit(_config(tiny_model_dir, tmp_path / "resumed", steps=2, **{"trainer.val_every": 0}))
    resumed = _fit(_config(tiny_model_dir, tmp_path / "resumed", steps=4, **{"trainer.val_every": 0}))
    assert resumed.start_step == 2
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history[2:]] == [h["loss"] for h in resumed.history]
