"""scripts/fuzz_grader.py from the command line: 300 hostile outputs, no crash, nothing correct, nothing run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_grader.py"


@pytest.mark.slow  # ~20 s on two shared cores
@pytest.mark.processes(exclusive=True)  # the grader's pool, timed
def test_fuzz_script_grades_300_hostile_outputs_without_a_crash():
    command = [sys.executable, str(SCRIPT), "300", "--seed", "1", "--timeout", "0.5", "--batch-size", "100", "--no-progress"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert counts["items"] == "300"
    assert (counts["crashes"], counts["graded correct"], counts["trapped executions"]) == ("0", "0", "0")
    assert counts["canary file created"] == "no"
    assert int(counts["timeouts"]) > 0  # the power towers and huge numbers did reach the workers
    assert int(counts["worker restarts"]) >= int(counts["timeouts"])
    assert float(counts["max wall per item"].removesuffix(" s")) < 0.5 + 5.0
    assert float(counts["peak RSS grading process"].removesuffix(" MB")) > 50  # the workers were measured
