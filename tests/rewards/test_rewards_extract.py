"""Answer extraction and the format rule (docs/ALGORITHM.md §4): pure string code, no workers."""

from __future__ import annotations

import time

import pytest

from anytime_reasoner.rewards.extract import (
    answer_paragraph,
    extract_answer,
    is_well_formed,
    last_boxed,
    summary_of,
)
from anytime_reasoner.rewards.normalize import clean_answer, same_text

FA = "**Final Answer**\n"


@pytest.mark.parametrize(
    "response, expected",
    [
        ("think</think>\n\n" + FA + "\\boxed{42}", "42"),
        ("cut here...\n\n...\n\n</think>\n\n" + FA + "$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("t</think>\n\n" + FA + "\\[\n\\boxed{7}\n\\]", "7"),
        ("t</think>\n\n" + FA + "\\boxed{1} or rather \\boxed{2}.", "2"),
        ("t</think>\n\n" + FA + "\\boxed{\\frac{a}{b}}", "\\frac{a}{b}"),
        ("t</think>\n\n" + FA + "\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("t</think>\n\n" + FA + "\\boxed {7}", "7"),
        ("t</think>\n\n" + FA + "\\fbox{8}", "8"),
        ("t</think>\n\n" + FA + "\\boxed{  9 }", "9"),
        # the box whose opener comes last wins: in a nested box that is the inner one
        ("t</think>\n\n" + FA + "\\boxed{\\boxed{3}}", "3"),
        # the inner box opens last and closes, so the unclosed outer one does not matter
        ("t</think>\n\n" + FA + "\\boxed{ \\boxed{3}", "3"),
        ("t</think>\n\n" + FA + "\\boxed{1} then \\boxed{2}", "2"),
        # plain braces inside the box are matched: the box closes at the second "}"
        ("t</think>\n\n" + FA + "\\boxed{a{b}c}", "a{b}c"),
        ("t</think>\n\n" + FA + "\\boxed{1} then \\fbox {2}", "2"),
        # the first Final Answer paragraph wins
        ("t</think>\n\n" + FA + "\\boxed{1}\n\n" + FA + "\\boxed{2}", "1"),
        # the summary starts after the last </think>
        ("a \\boxed{5}</think>b</think>\n\n" + FA + "\\boxed{9}", "9"),
        # no </think>: the whole text is searched (the response is malformed anyway)
        (FA + "\\boxed{3}", "3"),
        # blank space before the marker (three newlines split that way)
        ("t</think>\n\n\n" + FA + "\\boxed{4}", "4"),
    ],
)
def test_extracts_the_final_answer_box(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        "t</think>\n\n" + FA + "no box here",
        "t \\boxed{5}</think>\n\n" + FA + "the answer is five",  # a box in the thinking does not count
        "t</think>\n\n" + FA + "The answer is\n\n\\boxed{4}",  # box in a later paragraph
        "t</think>\n\n**Final Answer** \\boxed{3}",  # marker without its newline
        "t</think>\n\nSo **Final Answer**\n\\boxed{3}",  # text before the marker
        "t</think>\n\nThe answer is \\boxed{3}.",  # no Final Answer paragraph
        "t</think>\n\n" + FA + "\\boxed{}",  # empty box
        "t</think>\n\n" + FA + "\\boxedx{3}",  # another command
        # the last box opened is cut off (e.g. by the summary cap): no answer, even though an
        # earlier box is complete (the original's last_boxed_only_string rule)
        "t</think>\n\n" + FA + "\\boxed{1} and \\boxed{2",
        "t</think>\n\n" + FA + "\\boxed{1} and \\boxed{\\frac{2}{3}",
        "t</think>\n\n" + FA + "\\boxed{1} and \\boxed",  # cut right after the command
        "t</think>\n\n" + FA + "\\boxed{1} and \\boxed{2\\}",  # an escaped brace does not close
        "",
    ],
)
def test_no_answer(response):
    assert extract_answer(response) is None


def test_paragraph_and_summary_helpers():
    assert summary_of("a</think>b</think>c") == "c"
    assert summary_of("no marker") == "no marker"
    assert answer_paragraph("x\n\n" + FA + "y\nz\n\nw") == FA + "y\nz"
    assert answer_paragraph("x\n\ny") is None
    assert last_boxed("\\boxed{a}\\fbox{b}") == "b"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{\\boxed{3}}", "3"),  # openers at 0 and 7: the one at 7 is last
        ("\\boxed{1} and \\boxed{2", None),  # the last opener never closes
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{a{b}c}", "a{b}c"),  # depth 1 -> 2 at "{", 1 at "}", 0 at the final "}"
        ("\\boxed{\\{x\\}}", "\\{x\\}"),  # escaped braces leave the depth at 1
        ("\\boxed {x}", "x"),
        ("\\fbox{x}", "x"),
        ("\\boxed{ }", None),  # empty after stripping
        ("\\boxed{}", None),
        ("\\\\boxed{4}", None),  # "\\\\" is a line break, then the word "boxed"
        ("no box", None),
    ],
)
def test_last_boxed_takes_the_last_opener(text, expected):
    assert last_boxed(text) == expected


def test_clean_answer_unwraps_to_the_innermost_last_box():
    # a ground truth "\\boxed{\\boxed{3}}": the inner box opens last, so it cleans to "3"
    assert clean_answer("\\boxed{\\boxed{3}}") == "3"


@pytest.mark.parametrize(
    "response, expected",
    [("a</think>b", True), ("ab", False), ("a</think>b</think>c", False), ("</think>", True)],
)
def test_format_rule_counts_think_end(response, expected):
    assert is_well_formed(response) is expected


def test_configurable_markers():
    response = "t<END>\n\nANSWER:\n\\boxed{6}"
    assert extract_answer(response, think_end="<END>", marker="ANSWER:\n") == "6"
    assert is_well_formed(response, think_end="<END>")
    assert extract_answer(response) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("\\boxed{5}", "5"),
        ("\\(x+1\\)", "x+1"),
        ("12.\n", "12"),
        ("\\$5", "\\$5"),
    ],
)
def test_clean_answer(text, expected):
    assert clean_answer(text) == expected


def test_same_text_is_spelling_insensitive():
    assert same_text("\\dfrac{1}{2}", "$\\frac{1}{2}$")
    assert same_text("\\left( 1, 2 \\right)", "(1,2)")
    assert not same_text("\\leftarrow", "arrow")
    assert not same_text("", "")


def test_megabytes_are_linear_time():
    hostile = [
        "x" * 5_000_000 + "</think>\n\n" + FA + "\\boxed{1}",
        "</think>\n\n" + FA + "\\boxed{" * 300_000,
        "</think>\n\n" + FA + "{" * 300_000 + "\\boxed{2}" + "}" * 300_000,
        "</think>" + "\n\n" * 1_000_000 + FA + "\\boxed{3}",
        "</think>\n\n" + FA + "\\boxed{1}" * 200_000,
        "</think>\n\n" + FA + "\\boxed" + " " * 1_000_000 + "x",
        "</think>\n\n" + FA + "\\boxed{1}" * 200_000 + "\\boxed{" + "{" * 1_000_000,
        "</think>\n\n" + FA + "\\{" * 500_000 + "\\boxed{7" + "}" * 1_000_000,
    ]
    start = time.perf_counter()
    answers = [extract_answer(r) for r in hostile]
    assert time.perf_counter() - start < 5.0
    # the 7th: 200k complete boxes, then a last opener that never closes -> None
    # the 8th: the last opener closes at the first of the million "}" -> "7"
    assert answers == ["1", None, "2", "3", "1", None, None, "7"]
