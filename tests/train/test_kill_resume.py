"""scripts/kill_resume_trials.py, one trial each: a run of the embedded default killed with SIGKILL at
a random moment and restarted ends bit-identical to an uninterrupted run; an asynchronous run
(``--async-level 1``) with the trainer killed alone (its worker must exit by itself) and restarted
does too. The script's other kinds of trial (a kill inside a checkpoint write: its third; the rollout
worker killed: its odd ones, which tests/train/test_async_rollouts.py also runs at a fixed moment)
run with more trials (``python scripts/kill_resume_trials.py 10 [--async-level 1]``)."""

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
    assert module.main(["1", "--steps", "3", "--async-level", str(async_level)]) == 0
    out = capsys.readouterr().out
    assert "identical: 1/1" in out and out.count("-> identical") == 1
    if async_level:
        assert "worker still alive" not in out
