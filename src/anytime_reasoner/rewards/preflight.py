"""The cheap check of ``anytime-reasoner grade``, run by the CLI before the grader is imported: the
output file can be written (before a long grading run)."""

from __future__ import annotations

from anytime_reasoner.config import GradeConfig
from anytime_reasoner.errors import check_writable


def preflight_grade(cfg: GradeConfig) -> None:
    check_writable(cfg.output, "output", folder=False)
