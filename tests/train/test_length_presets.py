"""The budget-aware presets inside the trainer: L1 states a per-question target in the prompt,
the cap schedule sets each step's budget, and the shaped rewards reach the update."""

import re

import pytest
import torch

from tests.train.test_trainer_smoke import _build, _config

pytestmark = pytest.mark.slow  # trains a tiny model


class Recording:
    """Delegates to an engine and keeps every prefix it was asked to continue."""

    def __init__(self, engine):
        self.engine, self.prefixes = engine, []

    def sample(self, prefixes, n, params):
        self.prefixes.extend(list(p) for p in prefixes)
        return self.engine.sample(prefixes, n, params)


def test_l1_prompts_state_each_questions_target(tiny_model_dir, tmp_path):
    trainer = _build(_config(tiny_model_dir, tmp_path / "l1", preset="l1-exact", steps=1, **{"trainer.val_every": 0}))
    trainer.engine = Recording(trainer.engine)
    try:
        history = trainer.fit()
    finally:
        trainer.verifier.close()
    texts = [trainer.tokenizer.decode(p) for p in trainer.engine.prefixes]
    stated = [int(n) for t in texts if t.endswith("<think>\n") for n in re.findall(r"Think for (\d+) tokens\.", t)]
    assert len(stated) == 2  # batch_size 2: one thinking prompt each (G samples of it)
    assert all(1 <= n <= 16 for n in stated)  # U[0.025·16, 16] = U[1, 16] (rounded)
    assert history[0]["target_length"] == pytest.approx(sum(stated) / 2)
    summaries = [t for t in texts if not t.endswith("<think>\n")]
    assert summaries and all("Think for" in t for t in summaries)  # the summary sees the same prompt


def test_cap_schedule_sets_each_steps_budget(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path / "prune", preset="thinkprune", steps=3,
                  **{"length.cap_schedule": "1:1.0,2:0.75,3:0.5", "trainer.val_every": 0})  # fmt: skip
    trainer = _build(cfg)
    trainer.engine = Recording(trainer.engine)
    try:
        history = trainer.fit()
    finally:
        trainer.verifier.close()
    assert [h["cap"] for h in history] == [16, 12, 8]
    assert all(h["thinking_length"] <= h["cap"] for h in history)
    assert all(h["shaped_reward"] <= h["final_reward"] for h in history)  # the hard limit only removes reward


def test_dapo_dynamic_sampling_trains_only_informative_questions(tiny_model_dir, tmp_path):
    # dapo: G = 2, A = 1; the parity grader makes about half the groups all-right or all-wrong
    cfg = _config(tiny_model_dir, tmp_path / "dapo", preset="dapo", steps=2,
                  **{"rollout.n_summary": 1, "trainer.batch_size": 4, "trainer.val_every": 0,
                     "rollout.max_sampling_rounds": 4})  # fmt: skip
    trainer = _build(cfg)
    trained = []
    update = trainer.update

    def recording(rollouts, think_adv, summ_adv):
        trained.append(rollouts)
        return update(rollouts, think_adv, summ_adv)

    trainer.update = recording
    plan = cfg.plan_at(1)
    first_sampled = trainer.sample(1, plan)
    first, first_metrics = first_sampled.rollouts, first_sampled.metrics
    again = trainer.sample(1, plan).rollouts  # deterministic in the step: the same rounds, the same samples
    assert [[t.thinking_ids for t in row] for row in first.thinkings] == [
        [t.thinking_ids for t in row] for row in again.thinkings
    ]
    history = trainer.fit()
    assert first_metrics["kept_questions"] == history[0]["kept_questions"]
    for h, rollouts in zip(history, trained, strict=True):
        assert all(rollouts.informative())  # no group with equal scores reaches the update
        assert h["kept_questions"] == len(rollouts.thinkings) <= 4
        assert 1 <= h["sampling_rounds"] <= 4 and 0 < h["informative_share"] <= 1
        # rounds stop as soon as 4 are kept, or at the limit
        assert h["kept_questions"] == 4 or h["sampling_rounds"] == 4
    assert any(h["sampling_rounds"] > 1 for h in history)  # this grader leaves some groups uniform


class WrongVerifier:
    """Every answer wrong: every group uniform, so dynamic sampling keeps nothing."""

    def grade(self, responses, ground_truths):
        from anytime_reasoner.rewards.base import Grade

        return [Grade(correct=False, well_formed=True, extracted=None) for _ in responses]

    def close(self):
        pass


def test_dapo_steps_that_keep_no_question_log_and_do_not_update(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, tmp_path / "dapo0", preset="dapo", steps=1,
                  **{"rollout.n_summary": 1, "trainer.val_every": 0, "rollout.max_sampling_rounds": 2})  # fmt: skip
    trainer = _build(cfg)
    trainer.verifier = WrongVerifier()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    assert history[0]["kept_questions"] == 0 and history[0]["sampling_rounds"] == 2
    assert history[0]["final_reward"] == 0.0 and history[0]["optimizer_steps"] == 0
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
