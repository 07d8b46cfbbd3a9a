"""Asynchronous rollouts end to end on the embedded model (real answers, so the updates are real):
a rollout worker process at lag 0 computes what the trainer computes in-process, bit for bit; lags
1 and 2 are deterministic and resume exactly (a run stopped and resumed is a second run, which
ends with the same weights as an uninterrupted one); weights sent by gloo broadcast equal weights
sent by file; a worker killed mid-run is restarted (over a resume) and the run ends identical, and past
``trainer.max_worker_restarts`` the run stops with one line; two ``torchrun`` ranks sharing one
worker train as one process does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anytime_reasoner.config import TrainConfig, build_config
from anytime_reasoner.train.async_rollouts import ProcessRollouts, RolloutWorkerError
from anytime_reasoner.train.build import build_trainer
from anytime_reasoner.train.loggers import read_metrics
from tests.conftest import once_per_run, processes_lock

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.processes,
]  # a rollout worker process

SCALE = [  # scripts/kill_resume_trials.py's: the embedded model, small
    "model.path=tiny",
    "model.device=cpu",
    "rollout.n=4",
    "rollout.max_budget=48",
    "rollout.summary_max_tokens=8",
    "trainer.batch_size=4",
    "ppo.ppo_mini_batch_size=2",
    "ppo.lr=1e-4",
    "trainer.val_every=0",
    "trainer.save_every=1",
    "trainer.progress=false",
]


def _fit(out, steps, *extra):
    cfg = build_config(
        TrainConfig, preset="ar-uniform", overrides=[*SCALE, f"trainer.steps={steps}", f"trainer.out={out}", *extra]
    )
    trainer = build_trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.verifier.close()
    return trainer


def _same_weights(a, b) -> bool:
    x, y = a.model.state_dict(), b.model.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="session")
def lag_one(tmp_path_factory) -> Path:
    """3 steps at lag 1, weights by file, once per test run (two tests read it) → its run folder."""

    def run(folder: Path) -> None:
        with processes_lock(tmp_path_factory):
            _fit(folder / "run", 3, "trainer.async_level=1")

    return once_per_run(tmp_path_factory, "lag-one", run) / "run"


def _stopped_after(run: Path, step: int, out: Path) -> Path:
    """``run``'s folder as the same run stopped after ``step`` leaves it → ``out``: its checkpoints
    through ``step``, not the later ones nor the final model (``metrics.jsonl``'s later lines stay:
    a resume drops them, as after a kill). A checkpoint does not depend on how far its run went on
    (runs are deterministic), so resuming this is resuming a stopped run, without running one."""
    shutil.copytree(run, out)
    for checkpoint in (out / "checkpoints").glob("step_*"):
        if int(checkpoint.name.removeprefix("step_")) > step:
            shutil.rmtree(checkpoint)
    shutil.rmtree(out / "final")
    return out


def _kill_worker_before(step: int, monkeypatch) -> list[int]:
    """Kill the worker with SIGKILL when the trainer first asks for ``step``; the killed pids."""
    take, killed = ProcessRollouts.take, []

    def killing(self, wanted):
        if wanted == step and not killed:
            killed.append(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join()
        return take(self, wanted)

    monkeypatch.setattr(ProcessRollouts, "take", killing)
    return killed


def test_a_worker_at_lag_zero_samples_what_the_trainer_samples(tmp_path):
    inline = _fit(tmp_path / "inline", 2)
    worker = _fit(tmp_path / "worker", 2, "trainer.rollout_placement=process")
    assert _same_weights(inline, worker)
    assert [h["loss"] for h in inline.history] == [h["loss"] for h in worker.history]
    assert [h["policy_lag"] for h in worker.history] == [0.0, 0.0]
    assert not (tmp_path / "worker" / "rollout_weights").exists()  # the worker's files go with it


def test_lag_one_is_deterministic_resumes_exactly_and_survives_a_killed_worker(lag_one, tmp_path, monkeypatch, caplog):
    """Lag 1 by file, 3 steps (the fixture), against the same run stopped after step 1 and resumed
    with weights by gloo broadcast, its worker killed with SIGKILL before step 2: the trainer starts
    a new one (and a new broadcast group) and asks it again for what the dead one owed; the run ends
    with the first run's weights and losses."""
    reference = read_metrics(lag_one / "metrics.jsonl")
    # step t samples with the policy after step max(0, t − 2): versions 0, 0, 1, lags 0, 1, 1
    assert [m["policy_version"] for m in reference] == [0.0, 0.0, 1.0]
    assert [m["policy_lag"] for m in reference] == [0.0, 1.0, 1.0]
    tis_cap = json.loads((lag_one / "config.json").read_text())["ppo"]["tis_cap"]
    assert tis_cap == 2.0 and all("rollout_corrected_share" in m for m in reference)
    out = _stopped_after(lag_one, 1, tmp_path / "resumed")
    assert sorted(p.name for p in (out / "checkpoints" / "step_1" / "rollout_policy").iterdir()) == ["v0.safetensors"]
    # what a SIGKILL leaves besides a checkpoint: a half-written policy file and the dead worker's pid
    (out / "rollout_weights").mkdir()
    (out / "rollout_weights" / "v1.safetensors").write_bytes(b"\x00" * 10)
    (out / "rollout_worker.pid").write_text("999999999")
    killed = _kill_worker_before(2, monkeypatch)
    resumed = _fit(out, 3, "trainer.async_level=1", "trainer.weight_transfer=broadcast")
    assert killed and "rollout worker died (exit code -9)" in caplog.text
    assert resumed.start_step == 1
    final, resumed_final = (load_file(str(run / "final" / "model.safetensors")) for run in (lag_one, out))
    assert final.keys() == resumed_final.keys() and all(torch.equal(final[k], resumed_final[k]) for k in final)
    assert [h["loss"] for h in resumed.history] == [m["loss"] for m in reference[1:]]
    assert not (out / "rollout_weights").exists() and not (out / "rollout_worker.pid").exists()


def test_lag_two_resumes_exactly(tmp_path):
    straight = _fit(tmp_path / "straight", 4, "trainer.async_level=2")
    assert [h["policy_version"] for h in straight.history] == [0.0, 0.0, 0.0, 1.0]
    out = _stopped_after(tmp_path / "straight", 2, tmp_path / "resumed")
    saved = sorted(p.name for p in (out / "checkpoints" / "step_2" / "rollout_policy").iterdir())
    assert saved == ["v0.safetensors", "v1.safetensors"]  # steps 3 and 4 sample with policies 0 and 1
    resumed = _fit(out, 4, "trainer.async_level=2")
    assert resumed.start_step == 2 and _same_weights(straight, resumed)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]


def test_worker_deaths_past_the_limit_stop_the_run_with_one_line(tmp_path, monkeypatch):
    _kill_worker_before(2, monkeypatch)
    with pytest.raises(RolloutWorkerError, match=r"trainer.max_worker_restarts: the rollout worker died 1 times \(limit 0"):
        _fit(tmp_path / "run", 3, "trainer.async_level=1", "trainer.max_worker_restarts=0")


def test_two_trainer_ranks_share_one_worker_and_train_as_one_process(lag_one, tmp_path):
    """``torchrun`` with 2 ranks: rank 0 runs the worker, which samples the whole step as one process
    does (no rank in its streams), and each rank trains its questions under FSDP2; both steps sample
    with the initial policy, so the samples are the one-process run's and the weights agree to float32
    rounding (measured 1.9e-7). The one-process run is the fixture's first 2 steps: its checkpoint after
    step 3 keeps the policy after step 2 (``v2``: step 4 would sample with it)."""
    one = load_file(str(lag_one / "checkpoints" / "step_3" / "rollout_policy" / "v2.safetensors"))
    one_logged = read_metrics(lag_one / "metrics.jsonl")[:2]
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "anytime_reasoner"]
    cmd += ["train", "ar-uniform", *SCALE, "trainer.steps=2", f"trainer.out={out}", "trainer.async_level=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    two = load_file(str(out / "final" / "model.safetensors"))
    assert two.keys() == one.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=1e-5, msg=name)
    logged = read_metrics(out / "metrics.jsonl")
    assert [m["tokens"] for m in logged] == [m["tokens"] for m in one_logged]  # the same samples
    assert [m["policy_version"] for m in logged] == [0.0, 0.0]
