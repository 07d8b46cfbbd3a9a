"""The grading pool on hostile input, off the main thread, and across its lifecycle."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anytime_reasoner.rewards import Grade, GraderSettings, MathVerifier

TIMEOUT = 1.5
# Past the per-item timeout: the pool notices within 0.1 s, kills the worker, and the machine
# running the tests is shared with other jobs.
SLACK = 10.0


@pytest.fixture(scope="module")
def strict() -> Iterator[MathVerifier]:
    with MathVerifier(timeout=TIMEOUT, workers=2) as verifier:
        verifier.match(["1"], ["1.0"])  # start the workers before anything is timed
        yield verifier


def _timed(verifier: MathVerifier, responses: list[str], truths: list[str]) -> tuple[list[Grade], float]:
    start = time.monotonic()
    grades = verifier.grade(responses, truths)
    return grades, time.monotonic() - start


@pytest.mark.parametrize(
    "answer",
    ["9^{9^{9^{9}}}", "10^{10^{10^{10}}}", "(" * 900 + "1" + ")" * 900, "\\frac{1}{" * 300 + "2" + "}" * 300],
    ids=["power-tower", "huge-power", "deep-parens", "deep-fractions"],
)
def test_hostile_answer_is_wrong_within_the_timeout(strict: MathVerifier, respond, answer: str):
    (grade,), elapsed = _timed(strict, [respond(answer)], ["1"])
    assert grade.extracted == answer
    assert grade.correct is False and grade.reward == 0.0
    assert elapsed < TIMEOUT + SLACK


def test_power_tower_is_reported_as_timed_out(strict: MathVerifier, respond, caplog):
    with caplog.at_level("WARNING", logger="anytime_reasoner.rewards.grader"):
        (grade,), _ = _timed(strict, [respond("9^{9^{9}}")], ["1"])
    assert grade == Grade(correct=False, well_formed=True, extracted="9^{9^{9}}", timed_out=True)
    assert "timed out" in caplog.text


def test_over_long_answers_are_wrong_without_parsing(strict: MathVerifier, respond, caplog):
    nested = "(" * 5000 + "1" + ")" * 5000
    braces = "{" * 100_000 + "1" + "}" * 100_000
    with caplog.at_level("WARNING", logger="anytime_reasoner.rewards.grader"):
        grades, elapsed = _timed(strict, [respond(nested), respond(braces)], ["1", "1"])
    assert [g.correct for g in grades] == [False, False]
    assert [g.timed_out for g in grades] == [False, False]
    assert elapsed < 2.0  # decided in the caller, no worker involved
    assert "exceeds max_answer_chars" in caplog.text


def test_megabyte_thinking_still_grades(strict: MathVerifier, respond):
    response = respond("\\frac{1}{2}", thinking="Hmm. " * 1_000_000)
    (grade,), elapsed = _timed(strict, [response], ["0.5"])
    assert grade.reward == 1.0
    assert elapsed < TIMEOUT + SLACK


def test_a_hostile_batch_does_not_spoil_its_neighbours(strict: MathVerifier, respond):
    answers = ["9^{9^{9^{9}}}", "0.5", "10^{10^{10}}", "x=3", "9^{9^{9}}", "-q+p"]
    truths = ["1", "\\frac12", "1", "3", "1", "p-q"]
    grades, elapsed = _timed(strict, [respond(a) for a in answers], truths)
    assert [g.correct for g in grades] == [False, True, False, True, False, True]
    assert not any(grades[i].timed_out for i in (1, 3, 5))
    assert elapsed < 2 * TIMEOUT + SLACK  # three stuck answers, two workers
    # killed workers were replaced: the pool still grades
    assert strict.match(["\\sqrt{4}"], ["2"])[0].correct


def test_no_code_is_executed(strict: MathVerifier, respond, tmp_path: Path):
    marker = tmp_path / "executed"
    answers = [
        f"__import__('os').system('touch {marker}')",
        f"eval(\"open('{marker}', 'w')\")",
        f"lambda: open('{marker}', 'w')",
    ]
    grades = strict.grade([respond(a) for a in answers], ["0"] * len(answers))
    assert [g.correct for g in grades] == [False] * len(answers)
    assert not marker.exists()


def test_grading_from_another_thread(strict: MathVerifier, respond):
    results: list[list[Grade]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(strict.grade([respond("0.25"), respond("9^{9^{9}}")], ["\\frac14", "1"]))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=TIMEOUT + SLACK)
    assert not thread.is_alive() and errors == []
    ((easy, stuck),) = results
    assert easy.reward == 1.0
    assert stuck.correct is False and stuck.timed_out is True


def test_concurrent_callers_share_one_pool(grader: MathVerifier, respond):
    results: dict[int, list[Grade]] = {}

    def work(k: int) -> None:
        results[k] = grader.grade([respond(str(k)), respond(str(k + 1))], [str(k), str(k)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert {k: [g.correct for g in v] for k, v in results.items()} == {k: [True, False] for k in range(4)}


def test_format_rule_gates_the_reward(grader: MathVerifier):
    body = "\n\n**Final Answer**\n\\boxed{4}"
    grades = grader.grade(["a" + body, "a</think>" + body, "a</think>b</think>" + body], ["4"] * 3)
    assert [(g.correct, g.well_formed, g.reward) for g in grades] == [
        (True, False, 0.0),
        (True, True, 1.0),
        (True, False, 0.0),
    ]


def test_lifecycle_and_settings():
    with pytest.raises(ValueError, match="timeout"):
        GraderSettings(timeout=0)
    with pytest.raises(ValueError, match="responses"):
        MathVerifier().grade(["a"], [])
    verifier = MathVerifier(workers=1)
    assert verifier.grade([], []) == []
    assert verifier.match([None], ["1"])[0].correct is False  # decided without starting a pool
    verifier.close()
    with pytest.raises(RuntimeError, match="closed"):
        verifier.match(["x+1"], ["1+x+0"])


def test_the_caller_never_imports_sympy():
    code = (
        "import sys\n"
        "from anytime_reasoner.rewards import MathVerifier\n"
        "if __name__ == '__main__':\n"
        "    with MathVerifier(workers=1) as v:\n"
        "        assert v.match(['1/2'], ['0.5'])[0].correct\n"
        "    print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_pool_that_died_is_rebuilt(respond):
    with MathVerifier(workers=1) as verifier:
        assert verifier.match(["1/2"], ["0.5"])[0].correct
        verifier._pool.stop()  # simulate a pool broken behind the verifier's back
        verifier._pool.join()
        assert verifier.grade([respond("\\sqrt{9}")], ["3"])[0].reward == 1.0
