"""Fault injection for grading workers: a worker initializer the tests hand to ``MathVerifier``.

``MathVerifier(worker_initializer=functools.partial(install, report_path))`` runs :func:`install`
in each worker after its own set-up (memory cap, imports). It installs the execution traps of
:mod:`anytime_reasoner.rewards.fuzz` (when ``report_path`` is given) and wraps the worker's
``answers_match`` so that an answer ``\\fault{KIND:ARG}`` does something inside the worker instead
of being graded; every other answer is graded as usual. The caller's process is never touched.

Kinds: ``alloc:MIB`` allocates MIB mebibytes (a real allocation, failing under a smaller cap) and
scores correct if it succeeded; ``exit:CODE`` ends the worker with ``os._exit(CODE)``; ``kill``
sends it SIGKILL (as the OOM killer would); ``rlimit:MIB`` scores correct iff the worker's soft
``RLIMIT_AS`` is MIB mebibytes; ``eval:SOURCE`` and ``system:COMMAND`` call ``eval`` and
``os.system`` there (positive controls for the traps), scoring correct if they returned.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable, Sequence

from anytime_reasoner.rewards import equivalence
from anytime_reasoner.rewards.fuzz import install_traps

PREFIX = "\\fault{"
MIB = 1 << 20


def fault(kind: str, arg: object = "") -> str:
    """The answer that triggers ``kind`` in a worker set up by :func:`install`."""
    return f"{PREFIX}{kind}:{arg}}}"


def install(report_path: str | None = None) -> None:
    """Worker initializer: the traps (when ``report_path`` is given), then the fault triggers."""
    if report_path is not None:
        install_traps(report_path)
    equivalence.answers_match = _with_faults(equivalence.answers_match)


def _with_faults(real: Callable[[str, Sequence[str]], bool]) -> Callable[[str, Sequence[str]], bool]:
    def answers_match(answer: str, ground_truths: Sequence[str]) -> bool:
        if not (answer.startswith(PREFIX) and answer.endswith("}")):
            return real(answer, ground_truths)
        kind, _, arg = answer[len(PREFIX) : -1].partition(":")
        return _trigger(kind, arg)

    return answers_match


def _trigger(kind: str, arg: str) -> bool:
    if kind == "alloc":
        return len(bytearray(int(arg) * MIB)) > 0
    if kind == "exit":
        os._exit(int(arg))
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "rlimit":
        return resource.getrlimit(resource.RLIMIT_AS)[0] == int(arg) * MIB
    if kind == "eval":
        eval(arg)
        return True
    if kind == "system":
        os.system(arg)
        return True
    raise ValueError(f"unknown fault {kind!r}")
