"""Training with ``engine.backend=vllm`` on the embedded task (CI's vLLM environment; a clean skip
without vLLM): the weights reach the engine after every update, the engine's log-probs agree with
the trainer's in float32, and the policy learns. A vLLM engine in a rollout worker one step ahead
(``trainer.async_level=1``) is the device check's stage 5, which CI runs on the CPU in float32
(tests/test_gpu_check.py): the policy versions lag by one, and the worker engine's log-probs agree
with the trainer's at step 1 (the lag itself: tests/train/test_async_rollouts.py)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]


def test_training_with_the_vllm_engine_learns(tmp_path):
    """Six AR steps (lr 1e-4, the demo's scale) from the bootstrapped base model, rolled out by vLLM
    on the base widened to heads of 32 (same logits): validation anytime accuracy on 64 held-out
    questions measured 0.407 → 0.518; the test asks for 5 points. Engine vs trainer log-probs:
    max |Δ| measured ≤ 3.1e-5 per step."""
    from anytime_reasoner.config import EngineConfig, RunScale
    from anytime_reasoner.demo import train_config
    from anytime_reasoner.engine.vllm import VLLMEngine
    from anytime_reasoner.tasks.bootstrap import ensure_base_model
    from anytime_reasoner.train.build import build_trainer

    base = ensure_base_model(progress=False)
    engine = EngineConfig(backend="vllm", enforce_eager=True, kv_cache_gib=0.5)
    cfg = train_config(RunScale(steps=6, val_every=6, val_size=64, engine=engine), base, "ar-uniform", 0, tmp_path / "run", 524)
    trainer = build_trainer(cfg)
    try:
        before = trainer.validate()["val/anytime"]
        history = trainer.fit()
    finally:
        trainer.verifier.close()
    assert isinstance(trainer.engine, VLLMEngine)
    assert type(trainer.model).__name__ == "LlamaForCausalLM"  # the widened base trains
    assert trainer.engine.stats.weight_syncs == 1 + 6  # before the first rollout, then after every update
    assert all(h["rollout_logprob_diff_max"] < 1e-3 for h in history)
    assert all(h["rollout_logprob_tokens"] == h["tokens"] for h in history)  # every trained token had one
    assert history[-1]["val/anytime"] > before + 0.05, (before, history[-1]["val/anytime"])
