"""scripts/kill_resume_trials.py, 2 trials: runs of the embedded default killed with SIGKILL at
random moments and restarted end bit-identical to an uninterrupted run; asynchronous runs
(``--async-level 1``) with the trainer killed alone (its worker must exit by itself) or the rollout
worker killed (the trainer restarts it and goes on)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kill_resume_trials.py"


@pytest.mark.slow
@pytest.mark.processes  # trainer and rollout worker processes
@pytest.mark.parametrize("async_level", [0, 1])
def test_killed_and_restarted_runs_end_identical(capsys, async_level):
    spec = importlib.util.spec_from_file_location("kill_resume_trials", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    assert module.main(["2", "--steps", "3", "--async-level", str(async_level)]) == 0
    out = capsys.readouterr().out
    assert "identical: 2/2" in out and out.count("-> identical") == 2
    if async_level:
        assert "worker still alive" not in out
