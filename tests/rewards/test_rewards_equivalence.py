"""Equivalence through math-verify in the grading pool: labelled pairs and real benchmark answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from anytime_reasoner.rewards import MathVerifier, Verdict

PAIRS = Path(__file__).with_name("labelled_pairs.jsonl")
PER_FILE = 12  # benchmark answers taken from the start of each file


def test_labelled_pairs_agree(grader: MathVerifier):
    """Every hand-labelled pair (see its 'why'), positives and tricky negatives alike."""
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 60 and 0 < sum(r["equivalent"] for r in rows) < len(rows)
    verdicts = grader.match([r["answer"] for r in rows], [r["ground_truth"] for r in rows])
    wrong = [
        (r["answer"], r["ground_truth"], r["why"])
        for r, v in zip(rows, verdicts, strict=False)
        if v.correct != r["equivalent"] or v.timed_out
    ]
    assert wrong == []


def test_any_ground_truth_counts(grader: MathVerifier):
    verdicts = grader.match(
        ["5", "5", "0.5", "5", None],
        [["4", "5"], ["4", "6"], ["\\text{none}", "$\\boxed{\\frac{1}{2}}$"], [], ["5"]],
    )
    assert verdicts == [Verdict(True), Verdict(False), Verdict(True), Verdict(False), Verdict(False)]


def test_repeated_answers_are_graded_once_and_reported_per_item(grader: MathVerifier):
    done: list[int] = []
    verdicts = grader.match(["1/2"] * 5 + ["2"] * 3, ["0.5"] * 8, progress=done.append)
    assert [v.correct for v in verdicts] == [True] * 5 + [False] * 3
    assert sum(done) == 8


def _plain(answer: object) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    text = text.strip()
    return text[1:-1].strip() if len(text) > 1 and text[0] == text[-1] == "$" else text


def _forms(truth: str) -> tuple[list[str], list[str]]:
    """Equivalent rewrites of a benchmark answer, and for integers a wrong neighbour."""
    same, wrong = [truth], []
    if "\\frac" in truth:
        same.append(truth.replace("\\frac", "\\dfrac"))
    frac = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", truth)
    if frac:
        same.append(f"{frac[1]}/{frac[2]}")
    if re.fullmatch(r"-?\d+", truth):
        same += [f"{int(truth)}.0", f"{int(truth)}\\text{{ units}}"]
        wrong.append(str(int(truth) + 1))
    if re.fullmatch(r"-?\d+\.0", truth):
        same.append(truth[:-2])
        wrong.append(str(int(float(truth)) + 1))
    return same, wrong


def test_benchmark_answers_in_equivalent_forms(grader: MathVerifier, benchmark_dir: Path, respond):
    responses, truths, expected = [], [], []
    for path in sorted(benchmark_dir.glob("*.json")):
        for record in json.loads(path.read_text(encoding="utf-8"))[:PER_FILE]:
            answers = record["answer"] if isinstance(record["answer"], list) else [record["answer"]]
            gold = [a if isinstance(a, str) else json.dumps(a) for a in answers]
            same, wrong = _forms(_plain(answers[0]))
            for form, equivalent in [(f, True) for f in same] + [(f, False) for f in wrong]:
                responses.append(respond(form))
                truths.append(gold)
                expected.append((path.name, form, equivalent))
    grades = grader.grade(responses, truths)
    assert len(grades) > 5 * PER_FILE
    mismatched = [e for e, g in zip(expected, grades, strict=False) if g.reward != float(e[2]) or g.timed_out]
    assert mismatched == []
