"""scripts/kill_resume_trials.py, one trial: a run of the embedded default killed with SIGKILL at a
random moment and restarted ends bit-identical to an uninterrupted run. The script's other kinds of
trial run with more trials (``python scripts/kill_resume_trials.py 10 [--async-level 1]``): a kill
inside a checkpoint write (its third), and asynchronous runs, whose parts the suite proves apart at
less cost — the trainer killed alone takes its worker with it, even mid-import
(tests/train/test_worker_process.py); an asynchronous run resumes exactly over what a kill leaves
(tests/train/test_async_rollouts.py, lags 1 and 2); a killed worker is restarted (the same file)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kill_resume_trials.py"


@pytest.mark.slow
@pytest.mark.processes  # trainer and rollout worker processes
def test_a_killed_and_restarted_run_ends_identical(capsys):
    spec = importlib.util.spec_from_file_location("kill_resume_trials", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    assert module.main(["1", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "identical: 1/1" in out and out.count("-> identical") == 1
