"""Answer extraction and the format rule (SPEC §4), as pure linear-time string code.

A response is the model's text after the prompt: thinking, an optional cut marker, ``</think>``,
then the summary. The answer is the content of the last ``\\boxed{…}`` of the first ``\\n\\n``-separated
paragraph of the summary that starts with ``**Final Answer**\\n``.

Choices the SPEC leaves open:

* The summary is the text after the *last* think-end marker; a response without one is searched
  whole (it is malformed anyway, so its reward is 0, but ``correct`` stays informative).
* A paragraph may start with blank space before ``**Final Answer**\\n`` (``"\\n\\n\\n"`` splits that
  way); nothing else may precede the marker.
* "Last box" is the complete box whose closing brace comes last, so a box nested in another
  yields the outer one and an unclosed box is skipped. ``\\boxed {x}`` and ``\\fbox{x}`` count;
  escaped braces ``\\{ \\}`` do not count as braces; an empty box counts as no answer.

Every function is a bounded number of passes over its input (no backtracking regex), so megabytes
of hostile text cost milliseconds.
"""

from __future__ import annotations

import re

THINK_END = "</think>"
ANSWER_MARKER = "**Final Answer**\n"
PARAGRAPH_BREAK = "\n\n"

# Tokens relevant to brace matching: a box opener (its "{" included), an escaped character, a brace.
# The possessive "\s*+" never backtracks, so the scan is linear.
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*+\{|\\.|[{}]", re.DOTALL)
_BOX_NAMES = ("\\boxed", "\\fbox")


def is_well_formed(response: str, think_end: str = THINK_END) -> bool:
    """True iff the response holds exactly one think-end marker (SPEC §4)."""
    return response.count(think_end) == 1


def summary_of(response: str, think_end: str = THINK_END) -> str:
    """The text after the last think-end marker, or the whole response when there is none."""
    cut = response.rfind(think_end)
    return response if cut < 0 else response[cut + len(think_end):]


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
    """Content of the complete ``\\boxed{…}`` / ``\\fbox{…}`` whose closing brace is last, stripped."""
    if not any(name in text for name in _BOX_NAMES):
        return None
    stack: list[int | None] = []  # per open brace: content start if it opened a box, else None
    found: tuple[int, int] | None = None
    for match in _BOX_TOKENS.finditer(text):
        token = match.group()
        if token == "{":
            stack.append(None)
        elif token == "}":
            if stack:
                opened = stack.pop()
                if opened is not None:
                    found = (opened, match.start())
        elif token.endswith("{") and token.startswith(_BOX_NAMES):
            stack.append(match.end())
    if found is None:
        return None
    return text[found[0]:found[1]].strip() or None


def extract_answer(
    response: str, think_end: str = THINK_END, marker: str = ANSWER_MARKER
) -> str | None:
    """The boxed answer of the response's Final Answer paragraph, or None if there is none."""
    paragraph = answer_paragraph(summary_of(response, think_end), marker)
    if paragraph is None:
        return None
    return last_boxed(paragraph)
