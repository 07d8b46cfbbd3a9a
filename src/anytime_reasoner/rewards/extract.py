"""Answer extraction and the format rule (docs/ALGORITHM.md §4), as pure linear-time string code.

A response is the model's text after the prompt: thinking, an optional cut marker, ``</think>``,
then the summary. The answer is the content of the last ``\\boxed{…}`` of the first ``\\n\\n``-separated
paragraph of the summary that starts with ``**Final Answer**\\n``.

Choices the paper leaves open:

* The summary is the text after the *last* think-end marker; a response without one is searched
  whole (it is malformed anyway, so its reward is 0, but ``correct`` stays informative).
* A paragraph may start with blank space before ``**Final Answer**\\n`` (``"\\n\\n\\n"`` splits that
  way); nothing else may precede the marker.
* "Last box" is the box whose *opener* comes last, as in the original project (its
  ``last_boxed_only_string``: rfind of ``\\boxed`` / ``\\fbox``, then brace matching from there). If
  that box never closes there is no answer, even when an earlier box is complete: a summary whose
  last box is cut off by the summary cap scores 0, so the summary policy is not rewarded for an
  answer it abandoned or was still writing. Hence ``\\boxed{\\boxed{3}}`` yields ``3`` (the inner
  box opens last) and ``\\boxed{1} and \\boxed{2`` yields nothing. A ``\\boxed`` / ``\\fbox``
  command not followed (after blank space) by ``{`` is still the last opener, and yields nothing.
  ``\\boxed {x}`` and ``\\fbox{x}`` count (either name; the last opener of the two wins); escaped
  braces ``\\{ \\}`` do not count as braces; an empty box counts as no answer.

Every function is a bounded number of passes over its input (no backtracking regex): a megabyte of
hostile text costs milliseconds, and a few tenths of a second at worst when it is dense with
escapes or braces after the last box opener (each is one step of a Python loop);
``tests/rewards/test_grader_fuzz.py`` bounds it.
"""

from __future__ import annotations

import re

from anytime_reasoner.protocol import ANSWER_DELIMITER, THINK_END, answer_marker_of

ANSWER_MARKER = answer_marker_of(ANSWER_DELIMITER)  # "**Final Answer**\n"
PARAGRAPH_BREAK = "\n\n"

# Tokens relevant to finding the last box opener: a box command (with its "{" when one follows
# after blank space) or an escaped character (so "\\\\boxed" is a line break, then text).
# The possessive "\s*+" never backtracks, so the scan is linear.
_OPENER_TOKENS = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*+\{?|\\.", re.DOTALL)
# Tokens relevant to brace matching after the opener: an escaped character or a brace.
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)
_BOX_NAMES = ("\\boxed", "\\fbox")


def is_well_formed(response: str, think_end: str = THINK_END) -> bool:
    """True iff the response holds exactly one think-end marker (docs/ALGORITHM.md §4)."""
    return response.count(think_end) == 1


def summary_of(response: str, think_end: str = THINK_END) -> str:
    """The text after the last think-end marker, or the whole response when there is none."""
    cut = response.rfind(think_end)
    return response if cut < 0 else response[cut + len(think_end) :]


def answer_paragraph(summary: str, marker: str = ANSWER_MARKER) -> str | None:
    """The first ``\\n\\n``-separated paragraph that starts with ``marker`` (after blank space)."""
    start = 0
    while start <= len(summary):
        end = summary.find(PARAGRAPH_BREAK, start)
        if end < 0:
            end = len(summary)
        paragraph = summary[start:end]
        if paragraph.lstrip().startswith(marker):
            return paragraph
        start = end + len(PARAGRAPH_BREAK)
    return None


def last_boxed(text: str) -> str | None:
    """Content of the ``\\boxed{…}`` / ``\\fbox{…}`` whose opener comes last, stripped.

    None when there is no box, when that last box never closes, or when it is empty.
    """
    if not any(name in text for name in _BOX_NAMES):
        return None
    last = None
    for match in _OPENER_TOKENS.finditer(text):
        if match.group().startswith(_BOX_NAMES):
            last = match
    if last is None or not last.group().endswith("{"):
        return None
    depth = 1
    for match in _BRACE_TOKENS.finditer(text, last.end()):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[last.end() : match.start()].strip() or None
    return None


def extract_answer(response: str, think_end: str = THINK_END, marker: str = ANSWER_MARKER) -> str | None:
    """The boxed answer of the response's Final Answer paragraph, or None if there is none."""
    paragraph = answer_paragraph(summary_of(response, think_end), marker)
    if paragraph is None:
        return None
    return last_boxed(paragraph)
