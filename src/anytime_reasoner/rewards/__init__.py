"""Rewards: answer extraction, the format rule and math equivalence (docs/ALGORITHM.md §4).

The caller-side API imports no sympy; math-verify runs only in :class:`MathVerifier`'s workers.
"""

from anytime_reasoner.rewards.base import Grade, Verifier
from anytime_reasoner.rewards.extract import extract_answer, is_well_formed, last_boxed
from anytime_reasoner.rewards.grader import GraderSettings, GradingStats, MathVerifier, Verdict

__all__ = [
    "Grade",
    "GraderSettings",
    "GradingStats",
    "MathVerifier",
    "Verdict",
    "Verifier",
    "extract_answer",
    "is_well_formed",
    "last_boxed",
]
