"""Cheap string normalization of answers and ground truths, done before any math parsing.

Pure string code, linear in the input, no sympy: it runs in the caller's process. It

* unwraps a ground truth (or answer) that carries its own ``\\boxed{…}``,
* drops math-mode delimiters (``$``, ``\\(…\\)``, ``\\[…\\]``) and a trailing period,
* decides the easy case: two texts equal up to spacing and ``\\dfrac``/``\\tfrac``/``\\left``/``\\right``
  spelling are the same answer, with no worker needed.
"""

from __future__ import annotations

import re

from anytime_reasoner.rewards.extract import last_boxed

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_SPACING = re.compile(r"\s+|\\[,;:! ]|\\q?quad\b")
_SPELLINGS = re.compile(r"\\[dt]frac(?![A-Za-z])|\\(?:left|right)(?![A-Za-z])")


def clean_answer(text: str) -> str:
    """The mathematical content of an answer or ground truth, without delimiters or a box."""
    text = text.strip()
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed
    text = _UNESCAPED_DOLLAR.sub("", text).strip()
    if text.startswith(("\\(", "\\[")) and text.endswith(("\\)", "\\]")):
        text = text[2:-2].strip()
    return text.rstrip(". \n\t")


def canonical_text(text: str) -> str:
    """A spelling-insensitive key: no spacing, one fraction command, no ``\\left``/``\\right``."""
    text = _SPACING.sub("", text)
    return _SPELLINGS.sub(lambda m: "\\frac" if m.group().endswith("frac") else "", text)


def same_text(answer: str, ground_truth: str) -> bool:
    """True when the cleaned texts are equal up to spelling (a sufficient, never necessary, test)."""
    a, b = canonical_text(clean_answer(answer)), canonical_text(clean_answer(ground_truth))
    return bool(a) and a == b
