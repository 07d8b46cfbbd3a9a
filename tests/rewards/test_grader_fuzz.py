"""Hostile model outputs through ``extract_answer`` and ``MathVerifier.grade``: hypothesis properties.

The cases come from :mod:`anytime_reasoner.rewards.fuzz` (shared with ``scripts/fuzz_grader.py``),
driven by hypothesis' ``random.Random`` so that a failure shrinks and replays: deep nesting, power
towers, huge exponents and factorials, long digit strings, Unicode look-alikes, megabyte strings,
broken LaTeX, code-looking answers and the advisory's ``eval`` payloads, in well-formed and broken
response shapes. Checked:

* extraction never raises, returns None or a stripped non-empty piece of the response, returns the
  boxed answer wherever the response shape determines it, and takes under ``EXTRACT_BUDGET`` seconds
  even on 2 MB responses;
* grading a small batch lets no exception escape, returns one grade per response in order with
  ``well_formed`` as built, never grades a case correct (each case's ground truth is one its answer
  can never equal; see the fuzz module), and returns within ``rounds × (TIMEOUT + ROUND_MARGIN) +
  CALL_MARGIN`` where rounds = ⌈batch / WORKERS⌉;
* nothing is executed: the workers run :func:`~anytime_reasoner.rewards.fuzz.install_traps`, and
  after every batch the trap report is empty and the file the payloads would touch does not exist.
  That the traps do fire on a payload inside a worker (the positive control) is checked in
  ``test_grader_faults.py``; here, that the trap's test flags every payload that is Python and lets
  through the sources the grading libraries ``eval`` and ``exec`` themselves.

Departures: examples are derandomized (the same ones each run, so CI does not flake on a new draw)
and no example database is written; ``scripts/fuzz_grader.py --seed`` explores further.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from anytime_reasoner.rewards import MathVerifier, extract_answer
from anytime_reasoner.rewards.fuzz import (
    CANARY_TOKEN,
    CODE_PAYLOADS,
    FAMILIES,
    SHAPES,
    Case,
    hostile_case,
    install_traps,
    read_trap_report,
    suspicious_source,
)

TIMEOUT = 0.5  # per answer in a worker; garbage is wrong whether it times out or not
WARM_UP_TIMEOUT = 10.0  # the workers' first answers, before anything is timed
WORKERS = 2
ROUND_MARGIN = 0.5  # per round of tasks: replacing a killed worker (~0.1 s) and the pool's 0.1 s poll
CALL_MARGIN = 3.0  # per call: extracting megabyte responses, the pipes, a machine shared with other jobs
EXTRACT_BUDGET = 2.0  # seconds for one extraction (up to 3 MB); measured ~0.3 s per MB of escape-dense text
CANARY = os.path.join(tempfile.gettempdir(), f"anytime-reasoner-fuzz-pwned-{os.getpid()}")

FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
cases = st.builds(
    hostile_case,
    st.randoms(use_true_random=False),
    st.just(CANARY),
    st.sampled_from(sorted(FAMILIES)),
    st.sampled_from(SHAPES),
)


@pytest.fixture(scope="module")
def trapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MathVerifier, Path]]:
    """Workers with the traps installed, and the file the traps report to."""
    report = tmp_path_factory.mktemp("traps") / "report.txt"
    init = functools.partial(install_traps, str(report))
    with MathVerifier(timeout=WARM_UP_TIMEOUT, workers=WORKERS, worker_initializer=init) as verifier:
        # start the workers and their first parse before anything is timed, under a timeout a cold worker
        # meets on a loaded machine (a first parse once took past 0.5 s in CI beside pip installs; a worker
        # killed at the timeout is replaced by a cold one); the traps let real grading through
        ok = verifier.match(["\\frac{1}{2}", "x+1", "2.0", "\\sqrt{4}"], ["0.5", "1+x", "2", "2"])
        assert [v.correct for v in ok] == [True] * 4
        verifier.settings = dataclasses.replace(verifier.settings, timeout=TIMEOUT)  # the timed batches' timeout
        yield verifier, report
    assert read_trap_report(report) == []


def _nothing_ran(report: Path) -> None:
    assert read_trap_report(report) == []
    assert not os.path.exists(CANARY)


@settings(FUZZ, max_examples=150)
@given(case=cases)
def test_extraction_of_hostile_responses(case: Case):
    event(f"{case.family} / {case.shape}")
    start = time.monotonic()
    extracted = extract_answer(case.response)
    assert time.monotonic() - start < EXTRACT_BUDGET
    if extracted is not None:
        assert extracted == extracted.strip() and extracted and extracted in case.response
    if case.expected_known:
        assert extracted == case.expected


@pytest.mark.slow  # 10-15 s on two shared cores: 40 batches, about a third of them with a timed-out answer
@pytest.mark.processes(exclusive=True)  # the grader's pool, timed
@settings(FUZZ, max_examples=40)
@given(batch=st.lists(cases, min_size=1, max_size=4))
def test_hostile_batches_grade_wrong_in_time_and_execute_nothing(trapped: tuple[MathVerifier, Path], batch: list[Case]):
    verifier, report = trapped
    start = time.monotonic()
    grades = verifier.grade([c.response for c in batch], [c.truth for c in batch])
    elapsed = time.monotonic() - start
    assert len(grades) == len(batch)
    for case, grade in zip(batch, grades, strict=True):
        event(f"{case.family}{' (timed out)' if grade.timed_out else ''}")  # see --hypothesis-show-statistics
        assert grade.correct is False and grade.reward == 0.0, (case.family, case.shape, grade.extracted)
        assert grade.well_formed is case.well_formed
        if case.expected_known:
            assert grade.extracted == case.expected
    assert elapsed < math.ceil(len(batch) / WORKERS) * (TIMEOUT + ROUND_MARGIN) + CALL_MARGIN
    _nothing_ran(report)


ADVISORY = [
    '__import__("os").system("touch @CANARY@")',
    "().__class__.__bases__[0].__subclasses__()",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '@CANARY@'])",
]


@pytest.mark.parametrize("payload", ADVISORY, ids=["os-system", "subclasses", "popen-by-subclass"])
def test_advisory_payloads_are_extracted_verbatim_and_graded_wrong(trapped, respond, payload: str):
    verifier, report = trapped
    payload = payload.replace(CANARY_TOKEN, CANARY)
    response = respond(payload)
    assert f"\\boxed{{{payload}}}" in response
    assert extract_answer(response) == payload
    # "0" is what os.system returns: a grader that evaluated the answer would score it correct
    (grade,) = verifier.grade([response], ["0"])
    assert (grade.correct, grade.extracted, grade.reward) == (False, payload, 0.0)
    _nothing_ran(report)


def test_the_generators_cover_every_family_and_shape():
    """A seeded sweep reaches each family and shape (so the properties above are about all of them)."""
    rng = random.Random(0)
    seen = [hostile_case(rng, CANARY) for _ in range(400)]
    assert {c.family for c in seen} == set(FAMILIES) and {c.shape for c in seen} == set(SHAPES)
    assert sum(c.expected_known for c in seen) > 200  # most responses pin down their extraction
    assert any(len(c.response) > 1 << 20 for c in seen)


def _is_python(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def test_the_trap_flags_payloads_and_passes_the_libraries_own_sources():
    python_payloads = [p.replace(CANARY_TOKEN, CANARY) for p in CODE_PAYLOADS if _is_python(p)]
    assert len(python_payloads) >= 15
    assert [p for p in python_payloads if not suspicious_source(p)] == []
    assert suspicious_source(compile(python_payloads[0], "<string>", "eval"))
    # what latex2sympy, sympy and imports hand to eval/exec while grading ordinary answers
    library = [
        "Integer (12 )",
        "Symbol ('x' )",
        "Float ('1.5' )",
        "from sympy import *",
        "def monomial_mul(A, B):\n    (a0, a1,) = A\n    (b0, b1,) = B\n    return (a0 + b0, a1 + b1,)\n",
        compile("x = 1", "/some/module.py", "exec"),
    ]
    assert [s for s in library if suspicious_source(s)] == []
