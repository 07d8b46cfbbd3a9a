"""What a resumed run can rely on: one metrics line per step, a refused config change, pruned
checkpoints, the next data pass at an epoch boundary, the global generators, half-written
checkpoints ignored, and a stop with saved weights when gradients keep being non-finite."""

import json

import pytest
import torch

from anytime_reasoner.errors import UserError
from anytime_reasoner.train.checkpoint import latest_checkpoint, load_rng_state, load_trainer_state, rng_state
from anytime_reasoner.train.loggers import MetricLogger, read_metrics
from anytime_reasoner.train.trainer import TrainingStopped
from tests.train.test_resume_exact import _fit
from tests.train.test_trainer_smoke import _build, _config

QUIET = {"trainer.val_every": 0}


def test_metrics_keep_one_line_per_step_up_to_the_resumed_step(tmp_path):
    lines = [json.dumps({"step": s, "loss": 0.1 * s}) for s in (1, 2, 3)] + ['{"step": 4, "lo']  # torn by a kill
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    logger = MetricLogger(tmp_path, ["jsonl"], start_step=2)
    logger.log(3, {"loss": 0.5})
    logger.close()
    assert [(m["step"], m["loss"]) for m in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 0.1), (2, 0.2), (3, 0.5)]


@pytest.mark.slow
def test_a_config_change_that_alters_training_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _fit(_config(tiny_model_dir, out, steps=1, **QUIET))
    with pytest.raises(
        UserError, match=r"trainer.resume: .*step_1 was written with another config: ppo.lr \(0.01 → 0.02\); .*resume=force"
    ):
        _build(_config(tiny_model_dir, out, steps=2, **QUIET, **{"ppo.lr": 0.02}))
    forced = _build(_config(tiny_model_dir, out, steps=2, **QUIET, **{"ppo.lr": 0.02, "trainer.resume": "force"}))
    forced.verifier.close()
    assert forced.start_step == 1
    # more steps, another validation schedule and checkpoint cadence are not changes to training
    more = _build(_config(tiny_model_dir, out, steps=3, **{"trainer.val_every": 3, "trainer.save_every": 2}))
    more.verifier.close()
    assert more.start_step == 1


@pytest.mark.slow
def test_keep_checkpoints_prunes_the_oldest(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _fit(_config(tiny_model_dir, out, steps=3, **QUIET, **{"trainer.keep_checkpoints": 2}))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_3"]


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_reads_the_next_pass(tiny_model_dir, tmp_path):
    rows = [{"problem": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(4)]
    data = tmp_path / "four.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    # 4 questions, 2 per step: steps 1-2 are pass 0, steps 3-4 pass 1
    knobs = {**QUIET, "data.train": str(data), "data.val": str(data), "data.max_prompt_tokens": 256}
    _fit(_config(tiny_model_dir, tmp_path / "run", steps=2, **knobs))
    assert load_trainer_state(latest_checkpoint(tmp_path / "run")).epoch == 1  # the pass step 3 reads
    resumed = _fit(_config(tiny_model_dir, tmp_path / "run", steps=3, **knobs))
    assert resumed.start_step == 2 and [(h["step"], h["epoch"]) for h in resumed.history] == [(3, 1)]
    assert [m["epoch"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [0, 0, 1]


@pytest.mark.slow
def test_half_written_checkpoints_are_ignored_and_generators_restored(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    _fit(_config(tiny_model_dir, out, steps=2, **QUIET))
    saved = torch.load(out / "checkpoints" / "step_2" / "rng_rank0.pt", weights_only=True)
    (out / "checkpoints" / ".tmp_step_3").mkdir()  # killed while writing step 3
    (out / "checkpoints" / "step_4").mkdir()  # a folder without its trainer state (written last)
    torch.manual_seed(12345)
    resumed = _build(_config(tiny_model_dir, out, steps=3, **QUIET))
    resumed.verifier.close()
    assert resumed.start_step == 2
    assert torch.equal(rng_state()["torch"], saved["torch"])


@pytest.mark.slow
def test_non_finite_gradients_stop_the_run_with_its_weights_saved(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = _build(_config(tiny_model_dir, out, steps=3, **QUIET, **{"trainer.max_bad_steps": 2}))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    update = trainer.update
    trainer.update = lambda rollouts, think_adv, summ_adv: update(rollouts, think_adv * float("nan"), summ_adv)
    # 2 questions, 1 per optimizer step: step 1 skips both of its optimizer steps → the limit of 2
    with pytest.raises(TrainingStopped, match=r"trainer.max_bad_steps: 2 optimizer steps in a row .* at step 1; .*step_1"):
        trainer.fit()
    trainer.verifier.close()
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert latest_checkpoint(out).name == "step_1"
    assert [(m["step"], m["skipped_steps"]) for m in read_metrics(out / "metrics.jsonl")] == [(1, 2.0)]


def test_generators_resume_on_fewer_visible_gpus(tmp_path, monkeypatch):
    # Saved by rank 3 on cuda:3 of 8 visible devices; restored by rank 3 on cuda:0 with one device visible.
    # Only the rank's own device is saved and restored: restoring all eight (set_rng_state_all) would
    # index devices that are not there (IndexError on the first GPU run resumed on fewer GPUs).
    visible = {"n": 8}
    saved_on: list[int] = []
    restored: list[tuple[int, list[int]]] = []

    def get_rng_state(device):
        assert device.index < visible["n"]
        saved_on.append(device.index)
        return torch.tensor([device.index, 42], dtype=torch.uint8)

    def set_rng_state(state, device):
        if device.index >= visible["n"]:
            raise IndexError(f"cuda:{device.index} with {visible['n']} visible")
        restored.append((device.index, state.tolist()))

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    torch.save(rng_state(torch.device("cuda", 3)), tmp_path / "rng_rank3.pt")
    assert saved_on == [3]  # this rank's device only, not every visible one
    visible["n"] = 1
    load_rng_state(tmp_path, 3, torch.device("cuda", 0))
    assert restored == [(0, [3, 42])]  # the saved state, into the device the rank runs on now
    load_rng_state(tmp_path, 3, torch.device("cpu"))  # resumed on CPU: the CUDA state is not needed
    assert len(restored) == 1
