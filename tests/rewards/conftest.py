"""Fixtures for the grader tests: one shared grading pool, the benchmark folder, a response maker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anytime_reasoner.rewards import MathVerifier

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def grader() -> Iterator[MathVerifier]:
    """A pool for ordinary answers; the timeout is generous because the test machine is shared."""
    with MathVerifier(timeout=20.0, workers=2) as verifier:
        yield verifier


@pytest.fixture(scope="session")
def benchmark_dir() -> Path:
    """``../shared/data/test`` beside the repository (absent in a fresh clone: skip)."""
    folder = REPO_ROOT.parent / "shared" / "data" / "test"
    if not folder.is_dir() or not list(folder.glob("*.json")):
        pytest.skip(f"no benchmark answers at {folder}")
    return folder


def _respond(answer: str, thinking: str = "Let me compute. ...") -> str:
    return f"{thinking}...\n\n...\n\n</think>\n\n**Final Answer**\n$\\boxed{{{answer}}}$"


@pytest.fixture(scope="session")
def respond() -> Callable[..., str]:
    """``respond("42")``: a well-formed response whose Final Answer box holds ``42``."""
    return _respond
