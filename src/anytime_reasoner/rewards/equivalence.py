"""Mathematical equivalence of an answer and its ground truths, by math-verify.

This module is what grading worker processes run; it has no timeout of its own. math-verify's
timeouts use ``signal.alarm`` (main thread only), so they are switched off here (``None``) and
the caller bounds time by running :func:`answers_match` in a worker it can kill
(:class:`anytime_reasoner.rewards.grader.MathVerifier`). Calling it directly on untrusted text
can hang (``9^{9^{9}}`` does).

Parsing uses math-verify's LaTeX extraction only, never its plain-expression extraction: the
latter hands text to sympy's ``parse_expr``, which evaluates Python. Each side is cleaned
(:func:`~anytime_reasoner.rewards.normalize.clean_answer`) and wrapped in ``$…$``, so plain text
such as ``1/2`` or ``x=3`` is read as LaTeX.

Beyond math-verify: when its verdict is negative, two plain numbers, at least one of them a
decimal, still match if they agree to a relative 1e-12 (math-verify rejects ``8.7\\times 10^{8}``
against ``870000000`` because of binary float rounding). Decimal approximations of inexact values
are judged by math-verify alone: ``4.666667`` matches ``14/3`` (six decimals), ``4.6667`` does not.
"""

from __future__ import annotations

import logging
import resource
import signal
from collections.abc import Sequence
from typing import Any

import sympy
from math_verify import LatexExtractionConfig, parse, verify

from anytime_reasoner.rewards.normalize import clean_answer

LATEX_ONLY = (LatexExtractionConfig(boxed_match_priority=0),)
RELATIVE_TOLERANCE = 1e-12


def parse_math(text: str) -> list[Any]:
    """math-verify's parse of ``$text$``: ``[sympy object, string]``, or ``[]`` if nothing parsed."""
    return parse(f"${text}$", extraction_config=LATEX_ONLY, parsing_timeout=None)


def numbers_close(gold: Sequence[Any], pred: Sequence[Any]) -> bool:
    """Both parse to plain numbers, one has a decimal, and they agree to ``RELATIVE_TOLERANCE``."""
    if not gold or not pred:
        return False
    g, p = gold[0], pred[0]
    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
        return False
    if not (g.is_number and p.is_number) or not (g.has(sympy.Float) or p.has(sympy.Float)):
        return False
    try:
        a, b = complex(g.evalf(30)), complex(p.evalf(30))
    except (TypeError, ValueError, OverflowError):
        return False
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))


def answers_match(answer: str, ground_truths: Sequence[str]) -> bool:
    """True if ``answer`` is equivalent to any ground truth. Untimed: run it in a killable worker."""
    pred = parse_math(clean_answer(answer))
    if not pred:
        return False
    for truth in ground_truths:
        gold = parse_math(clean_answer(truth))
        if gold and (verify(gold, pred, timeout_seconds=None) or numbers_close(gold, pred)):
            return True
    return False


def init_worker(memory_limit_mb: int | None) -> None:
    """Set up a grading process: die at once on SIGTERM, cap memory, quiet logs, warm caches."""
    # The pool stops a timed-out worker with SIGTERM; a Python-level handler would not run
    # while the worker is stuck inside one long C call (big-integer arithmetic), so use the default.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_limit_mb is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_limit_mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    # math-verify warns once per process that its timeouts are off; the pool provides them.
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    answers_match("\\frac{1}{2}", ["0.5"])  # imports and builds the parser before any timed task
