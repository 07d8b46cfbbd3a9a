"""Grading workers under faults: the memory cap, a worker that dies, the execution traps themselves.

Faults are injected inside the workers through ``MathVerifier(worker_initializer=…)`` and
``tests/rewards/faults.py``: a real allocation past the cap, ``os._exit``, SIGKILL, a direct
``eval``/``os.system``. The production path is checked too: ``2^{2^{31}}`` makes sympy build a
256 MB integer, which a 400 MB cap stops in a few seconds (math-verify swallows the MemoryError;
the worker's memory pressure gives it away). One worker only, so that grading on after a fault
proves the worker was replaced, not merely that another one was free.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from anytime_reasoner.rewards import MathVerifier
from anytime_reasoner.rewards.fuzz import read_trap_report
from anytime_reasoner.rewards.grader import OUT_OF_MEMORY_EXIT
from tests.rewards import faults
from tests.rewards.faults import fault

CAP_MIB = 1024
LOGGER = "anytime_reasoner.rewards.grader"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traps") / "report.txt"


@pytest.fixture(scope="module")
def faulty(report: Path) -> Iterator[MathVerifier]:
    """One worker, a 1 GiB address-space cap, the traps and the fault triggers."""
    init = functools.partial(faults.install, str(report))
    with MathVerifier(timeout=20.0, workers=1, memory_limit_mb=CAP_MIB, worker_initializer=init) as verifier:
        assert verifier.match(["\\frac{1}{2}"], ["0.5"])[0].correct  # up, and the wrappers let grading through
        yield verifier


def _grades_on(verifier: MathVerifier) -> None:
    """The verifier still grades, right and wrong, on the same pool."""
    assert [v.correct for v in verifier.match(["\\sqrt{9}", "4"], ["3", "5"])] == [True, False]


def test_workers_run_under_the_address_space_cap(faulty: MathVerifier):
    verdicts = faulty.match([fault("rlimit", CAP_MIB), fault("rlimit", 2 * CAP_MIB)], ["1", "1"])
    assert [v.correct for v in verdicts] == [True, False]


def test_an_allocation_past_the_cap_ends_the_worker_which_is_replaced(faulty: MathVerifier, respond, caplog):
    before = faulty.stats
    assert faulty.match([fault("alloc", 64)], ["1"])[0].correct  # under the cap: allocates, scores "correct"
    huge = fault("alloc", 4 * CAP_MIB)
    with caplog.at_level("WARNING", logger=LOGGER):
        grades = faulty.grade([respond(huge)] * 3, ["1"] * 3)  # one task for the three
    assert [(g.correct, g.timed_out, g.reward) for g in grades] == [(False, False, 0.0)] * 3
    assert "ran out of memory (memory_limit_mb=1024)" in caplog.text
    after = faulty.stats
    assert (after.out_of_memory, after.worker_deaths, after.errors) == (
        before.out_of_memory + 1,
        before.worker_deaths + 1,
        before.errors,
    )
    assert after.worker_restarts == before.worker_restarts + 1
    _grades_on(faulty)
    assert faulty.stats.pools_started == before.pools_started  # the pool replaced its worker; not rebuilt


@pytest.mark.slow  # ~3-7 s of big-integer arithmetic
@pytest.mark.processes(exclusive=True)  # the grader's pool, timed
def test_an_answer_building_a_huge_integer_runs_out_of_memory_and_is_logged(respond, caplog):
    with MathVerifier(timeout=120.0, workers=1, memory_limit_mb=400) as verifier:
        assert verifier.match(["\\frac{1}{2}"], ["0.5"])[0].correct
        with caplog.at_level("WARNING", logger=LOGGER):
            (grade,) = verifier.grade([respond("2^{2^{31}}")], ["1"])
        assert (grade.correct, grade.timed_out) == (False, False)
        assert "ran out of memory (memory_limit_mb=400)" in caplog.text
        stats = verifier.stats
        assert (stats.out_of_memory, stats.worker_deaths, stats.timeouts) == (1, 1, 0)
        _grades_on(verifier)
        assert verifier.stats.pools_started == 1


@pytest.mark.parametrize("kind, arg, code", [("exit", 3, "exit code 3"), ("kill", "", "exit code -9")])
def test_a_dead_worker_is_replaced_and_its_answers_score_zero(faulty: MathVerifier, respond, caplog, kind, arg, code):
    before = faulty.stats
    dying = respond(fault(kind, arg))
    with caplog.at_level("WARNING", logger=LOGGER):
        grades = faulty.grade([dying, respond("0.5"), dying], ["1", "\\frac{1}{2}", "1"])
    assert [g.reward for g in grades] == [0.0, 1.0, 0.0]
    assert not any(g.timed_out for g in grades)
    assert "grading worker died" in caplog.text and code in caplog.text
    after = faulty.stats
    assert after.worker_deaths == before.worker_deaths + 1 and after.out_of_memory == before.out_of_memory
    _grades_on(faulty)
    assert faulty.stats.pools_started == before.pools_started


def test_out_of_memory_exit_status_is_not_one_python_uses():
    assert OUT_OF_MEMORY_EXIT not in (0, 1, 2, 120)  # success, uncaught exception, usage, flush failure


def test_the_traps_fire_inside_a_worker_and_leave_no_effect(faulty: MathVerifier, report: Path, tmp_path: Path, caplog):
    """Positive control for the fuzz tests: a direct eval or os.system of a payload is caught."""
    canary = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {canary}')"
    answers = [fault("eval", "1+1"), fault("eval", payload), fault("system", f"touch {canary}")]
    with caplog.at_level("WARNING", logger=LOGGER):
        verdicts = faulty.match(answers, ["1"] * 3)
    assert [v.correct for v in verdicts] == [True, False, False]  # benign eval runs; the others are refused
    assert caplog.text.count("ExecutionTrapped") == 2
    assert not canary.exists()
    lines = read_trap_report(report)
    assert [line.split("\t")[1] for line in lines] == ["builtins.eval", "os.system"]
    assert str(canary) in lines[0] and str(canary) in lines[1]
    _grades_on(faulty)  # a refused call does not hurt the worker
