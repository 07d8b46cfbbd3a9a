"""The trainer's fidelity knobs: random streams per (seed, step, phase), the loss constant, and
validation with val_n thinkings × val_n_summary summaries per question."""

import pytest

from anytime_reasoner.seeding import derive_seed
from tests.train.test_trainer_smoke import _build, _config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]  # slow: trains or generates with a tiny model


class RecordingEngine:
    """Passes calls through to the real engine and records (seed, prefixes, counts) of each."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def sample(self, prefixes, n, params):
        self.calls.append((params.seed, len(prefixes), n))
        return self.inner.sample(prefixes, n, params)


def test_every_phase_of_every_step_has_its_own_stream(tiny_model_dir, tmp_path):
    trainer = _build(_config(tiny_model_dir, tmp_path / "run", **{"trainer.seed": 5}))
    trainer.engine = RecordingEngine(trainer.engine)
    try:
        trainer.train_step(1)
        trainer.train_step(2)
        trainer.validate()
    finally:
        trainer.verifier.close()
    seeds = [seed for seed, _, _ in trainer.engine.calls]
    # step 1 thinking, step 1 summary, step 2 thinking, step 2 summary, validation thinking, summary
    expected = [
        derive_seed(derive_seed(5, 1, "rollout"), "thinking"),
        derive_seed(derive_seed(5, 1, "rollout"), "summary"),
        derive_seed(derive_seed(5, 2, "rollout"), "thinking"),
        derive_seed(derive_seed(5, 2, "rollout"), "summary"),
        derive_seed(derive_seed(5, "validation"), "thinking"),
        derive_seed(derive_seed(5, "validation"), "summary"),
    ]
    assert seeds == expected
    assert len(set(seeds)) == 6  # the old rule (seed·100003 + t, +1) made step t's summary = step t+1's thinking


def test_validation_samples_val_n_thinkings_and_val_n_summary(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path / "run", **{"trainer.val_n": 3, "trainer.val_n_summary": 2, "data.val_size": 2})
    trainer = _build(cfg)
    trainer.engine = RecordingEngine(trainer.engine)
    try:
        metrics = trainer.validate()
    finally:
        trainer.verifier.close()
    (_, n_prompts, n_thinking), (_, _, summary_counts) = trainer.engine.calls
    assert (n_prompts, n_thinking) == (2, 3)  # 2 questions × 3 thinkings
    # every distinct summary prefix gets 2 × (budgets sharing it) samples; 4 budgets per thinking
    assert sum(summary_counts) == 2 * 3 * 4 * 2
    assert len(metrics["val/accuracy"]) == 4


def test_loss_constant_default_and_override(tiny_model_dir, tmp_path):
    trainer = _build(_config(tiny_model_dir, tmp_path / "a"))
    # derived bound: b_max + S·A·(inserted + cap) = 16 + 4·2·(30 + 6) = 304, with the inserted text
    # "...\n\n...\n\n" (10 bytes) + </think> (1) + "\n\n**Final Answer**\n" (19) = 30 tokens
    assert trainer.max_response_len == 304
    trainer.verifier.close()
    fixed = _build(_config(tiny_model_dir, tmp_path / "b", **{"ppo.max_response_len": 10176}))
    try:
        assert fixed.max_response_len == 10176
        assert fixed.train_step(1)["max_response_len"] == 10176  # logged every step
    finally:
        fixed.verifier.close()


class AlternatingVerifier:
    """Grades by position: every third response correct and well formed (rewards that vary across
    thinkings and budgets, so the variances are not all zero)."""

    def grade(self, responses, ground_truths):
        from anytime_reasoner.rewards.base import Grade

        return [Grade(correct=i % 3 == 0, well_formed=True, extracted="1") for i in range(len(responses))]

    def close(self):
        pass


def test_variance_diagnostics_are_computed_in_validation_under_the_uniform_prior(tiny_model_dir, tmp_path):
    """As the original's ``_validate``: BRPO's variance ratios on the validation rollouts, with the
    validation budgets' uniform prior, whatever prior training uses (here ar-linear's)."""
    import torch

    from anytime_reasoner.algo.advantages import brpo_diagnostics

    cfg = _config(tiny_model_dir, tmp_path / "run", preset="ar-linear", **{"trainer.val_n": 4, "data.val_size": 3})
    trainer = _build(cfg)
    trainer.verifier.close()
    trainer.verifier = AlternatingVerifier()
    seen = []
    rollout = trainer.rollout
    trainer.rollout = lambda *args, **kwargs: seen.append(rollout(*args, **kwargs)) or seen[-1]
    metrics = trainer.validate()
    (batch,) = seen
    scores, segments = batch.scores(), batch.segment_mask()
    assert float(scores.std()) > 0  # rewards vary: the diagnostics are not trivially zero
    uniform = brpo_diagnostics(scores, torch.full((4,), 0.25), segments)
    linear = brpo_diagnostics(scores, torch.tensor(trainer.plan.probs), segments)  # 0.1, 0.2, 0.3, 0.4
    assert trainer.plan.probs != trainer.val_plan.probs == (0.25, 0.25, 0.25, 0.25)
    for name in ("var_R", "var_R_minus_V", "ratio_R_minus_V", "ratio_R_minus_V1", "ratio_R_minus_V2"):
        assert metrics[f"val/{name}"] == uniform[name]
    assert uniform["var_R"] != linear["var_R"]  # the prior matters: the validation one is the uniform one
