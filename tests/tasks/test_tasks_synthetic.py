"""The synthetic task: determinism, train/held-out split, worked-solution format (hand-checked)."""

import itertools
import random

import pytest

from anytime_reasoner.rewards.extract import extract_answer, is_well_formed
from anytime_reasoner.rewards.grader import MathVerifier
from anytime_reasoner.tasks import synthetic
from anytime_reasoner.tasks.synthetic import Problem, TaskSpec

EXACT = TaskSpec(slip_rate=0.0, recheck_rate=0.0)


def graded_answer(response: str) -> str | None:
    """The answer the project's grader reads from a well-formed response."""
    assert is_well_formed(response)
    return extract_answer(response)


class ScriptedRng(random.Random):
    """``random()`` returns the scripted values in order (fails loudly when they run out)."""

    def __init__(self, values):
        super().__init__(0)
        self._values = iter(values)

    def random(self):
        return next(self._values)


def test_exact_teacher_solution_hand_checked():
    problem = Problem(values=(47, 12, 83, 55), spec=EXACT)
    assert problem.question == "a=47\nb=12\nc=83\nd=55\nWhich value is the largest?"
    assert problem.answer == "83"
    solution = problem.solution(random.Random(0))
    assert solution.text == (
        "<think>\na=47 best=47\nb=12 best=47\nc=83 best=83\nd=55 best=83\n</think>\n\n**Final Answer**\n\\boxed{83}"
    )
    assert solution.text.count("</think>") == 1
    assert graded_answer(solution.response) == problem.answer


def test_slip_and_recheck_follow_the_rng():
    problem = Problem(values=(47, 12, 83), spec=TaskSpec(slip_rate=0.5, recheck_rate=0.5))
    # a: re-check draw 0.9 (none); b: no update needed, re-check draw 0.1 (yes);
    # c: update draw 0.2 < 0.5 → slip (best stays 47); last item: no re-check draw.
    solution = problem.solution(ScriptedRng([0.9, 0.1, 0.2]))
    assert solution.thinking == "a=47 best=47\nb=12 best=47\ncheck best=47\nc=83 best=47\n"
    assert solution.answer == "47" and problem.answer == "83"
    assert graded_answer(solution.response) == "47"


def test_cut_summary_is_a_scanned_value_after_the_cut_marker():
    problem = Problem(values=(47, 12, 83, 55), spec=EXACT)
    visible = "a=47 best=47\nb=12 best=47\nc=8"  # c's value is incomplete: not scanned yet
    guesses = {problem.cut_summary(visible, random.Random(s)).answer for s in range(50)}
    assert guesses == {"47", "12"}
    cut = problem.cut_summary(visible, random.Random(0))
    assert cut.response.startswith(visible + "...\n\n...\n\n</think>\n\n**Final Answer**\n\\boxed{")
    assert cut.response.count("</think>") == 1
    # Nothing scanned yet: any question value.
    assert {problem.cut_summary("a=4", random.Random(s)).answer for s in range(80)} == {"47", "12", "83", "55"}


def test_generators_are_deterministic_by_seed():
    first = [p.values for p in itertools.islice(synthetic.train_stream(3), 20)]
    assert first == [p.values for p in itertools.islice(synthetic.train_stream(3), 20)]
    assert first != [p.values for p in itertools.islice(synthetic.train_stream(4), 20)]
    assert synthetic.held_out(30, seed=1) == synthetic.held_out(30, seed=1)
    assert synthetic.held_out(10, seed=1) == synthetic.held_out(30, seed=1)[:10]


def test_train_and_held_out_are_disjoint():
    held = {p.values for p in synthetic.held_out(300, seed=0)}
    assert len(held) == 300
    train = {p.values for seed in (0, 1) for p in itertools.islice(synthetic.train_stream(seed), 3000)}
    assert not held & train
    assert all(synthetic.is_held_out(v) for v in held)


def test_problems_respect_the_spec():
    spec = TaskSpec(min_items=2, max_items=4, low=10, high=20)
    for p in itertools.islice(synthetic.train_stream(0, spec), 200):
        assert 2 <= len(p.values) <= 4 and all(10 <= v <= 20 for v in p.values)
        assert p.answer == str(max(p.values))
    with pytest.raises(ValueError, match="slip_rate"):
        TaskSpec(slip_rate=1.0)


def test_teacher_is_imperfect_but_mostly_right():
    rng = random.Random(0)
    problems = synthetic.held_out(400, seed=0)
    accuracy = sum(p.solution(rng).answer == p.answer for p in problems) / len(problems)
    assert 0.5 < accuracy < 0.85
    assert synthetic.teacher_accuracy(400, seed=0) == accuracy


def test_the_project_grader_scores_synthetic_responses():
    """Worked solutions and cut summaries are graded by the real verifier (integer answers are
    decided in the caller, no grading worker starts)."""
    problem = Problem(values=(47, 12, 83, 55), spec=EXACT)
    full = problem.solution(random.Random(0)).response
    cut = problem.cut_summary("a=47 best=47\nb=12 best=47\n", random.Random(0))
    with MathVerifier() as verifier:
        grades = verifier.grade(
            [full, cut.response, full.replace("</think>", "</think></think>"), full.replace("{83}", "{83")],
            [(problem.answer,), (cut.answer,), (problem.answer,), (problem.answer,)],
        )
        assert verifier._pool is None
    assert [g.reward for g in grades] == [1.0, 1.0, 0.0, 0.0]
    assert [g.extracted for g in grades] == ["83", cut.answer, "83", None]
