"""Trainer smoke test: two RL steps on a tiny local model, end to end on CPU."""

import json
import math

import pytest
import torch

from anytime_reasoner.config import TrainConfig, build_config
from anytime_reasoner.train.build import build_trainer
from anytime_reasoner.train.checkpoint import latest_checkpoint, load_trainer_state
from anytime_reasoner.train.loggers import read_metrics

pytestmark = pytest.mark.slow  # trains or generates with a tiny model


class ParityVerifier:
    """A random tiny model never answers right; reward by response-length parity instead so the
    advantages are non-zero and the update has something to do."""

    def grade(self, responses, ground_truths):
        from anytime_reasoner.rewards.base import Grade

        return [Grade(correct=len(r) % 2 == 0, well_formed=True, extracted=None) for r in responses]

    def close(self):
        pass


def _build(cfg):
    trainer = build_trainer(cfg)
    trainer.verifier.close()
    trainer.verifier = ParityVerifier()
    return trainer


def _config(model_dir, out, preset="ar-uniform", steps=2, **extra):
    return build_config(TrainConfig, preset=preset, overrides=_overrides(model_dir, out, steps, **extra))


def _overrides(model_dir, out, steps=2, **extra) -> list[str]:
    """The tiny-model test run as ``key=value`` overrides (what ``anytime-reasoner train`` takes)."""
    return [
        f"model.path={model_dir}",
        "model.device=cpu",
        "rollout.n=2",
        "rollout.n_summary=2",
        "rollout.max_budget=16",
        "rollout.summary_max_tokens=6",
        "ppo.lr=1e-2",
        "ppo.ppo_mini_batch_size=1",
        "ppo.ppo_max_token_len=256",
        f"trainer.steps={steps}",
        "trainer.batch_size=2",
        "trainer.val_every=2",
        "trainer.save_every=1",
        "trainer.progress=false",
        "data.val_size=2",
        f"trainer.out={out}",
        *[f"{k}={v}" for k, v in extra.items()],
    ]


def test_two_steps_update_log_checkpoint_and_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = _build(_config(tiny_model_dir, out))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        history = trainer.fit()
    finally:
        trainer.verifier.close()
    assert [h["step"] for h in history] == [1, 2]
    for h in history:
        assert math.isfinite(h["loss"])
        assert len(h["reward_per_budget"]) == 4  # ar-uniform: 4 budgets
        assert len(h["var_R_minus_V"]) == 4
        # the step's phases are timed and nest: rollout = thinking + summary + grading + bookkeeping
        phases = [h[f"time_{p}"] for p in ("thinking", "summary", "grading")]
        assert all(t > 0 for t in phases) and sum(phases) <= h["time_rollout"] <= h["time_step"]
        update = [h[f"time_{p}"] for p in ("packing", "old_logprobs", "forward_backward", "optimizer")]
        assert all(t > 0 for t in update) and h["time_rollout"] + sum(update) <= h["time_step"]
        # padding: the rows' real tokens over everything run through the model
        assert h["padding_share"] == pytest.approx(1 - h["row_tokens"] / h["padded_tokens"])
        assert 0 <= h["padding_share"] < 1 and h["tokens"] <= h["row_tokens"] <= h["padded_tokens"]
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "an update with lr 1e-2 must change parameters"

    logged = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in logged] == [1, 2]
    assert "val/accuracy" in logged[-1] and "grad_norm" in logged[0]

    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_2"
    assert load_trainer_state(ckpt).step == 2
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    for k, v in reloaded.state_dict().items():
        torch.testing.assert_close(v, trainer.model.state_dict()[k])

    # resume=auto: a run asked for 3 steps continues at step 3 from the checkpoint
    resumed = _build(_config(tiny_model_dir, out, steps=3))
    try:
        assert resumed.start_step == 2
        more = resumed.fit()
    finally:
        resumed.verifier.close()
    assert [h["step"] for h in more] == [3]
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["trainer"]["steps"] == 3


def test_bfloat16_compute_keeps_float32_master_weights(tiny_model_dir, tmp_path):
    trainer = _build(_config(tiny_model_dir, tmp_path / "bf16", steps=1, **{"model.dtype": "bfloat16", "trainer.val_every": 0}))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.fit()
    finally:
        trainer.verifier.close()
    assert trainer.runtime.compute_dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 for v in trainer.model.state_dict().values())
    assert all(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    # the exported model is in the compute dtype, as the base checkpoint would be
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16" / "final")
    assert exported.dtype == torch.bfloat16
