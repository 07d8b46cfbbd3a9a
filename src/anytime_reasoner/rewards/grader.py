"""The math verifier: extraction here, equivalence in killable worker processes.

:class:`MathVerifier` implements :class:`~anytime_reasoner.rewards.base.Verifier`. Keep one for a
whole run (it is a context manager; :meth:`MathVerifier.close` ends its workers)::

    with MathVerifier(GraderSettings(timeout=10, workers=4)) as verifier:
        grades = verifier.grade(responses, ground_truths)

How a batch is graded:

1. In the caller: the format rule, answer extraction, the answer-length cap and the plain-text
   fast path (:mod:`~anytime_reasoner.rewards.normalize`). These are linear-time string code.
2. Answers still undecided are deduplicated (a rollout repeats answers many times) and sent to a
   ``pebble`` process pool, one task each, with a per-task timeout that starts when a worker
   picks the task up. A task that runs past it is counted wrong with ``timed_out=True`` and its
   worker is killed and replaced; the other tasks go on. A worker that crashes or raises counts
   the answer wrong (not timed out); one that dies (a C-level crash, ``os._exit``, the OOM killer)
   is replaced by the pool. Each worker's address space is capped (``memory_limit_mb``,
   ``RLIMIT_AS``). A worker whose task ran out of it ends itself (exit status
   :data:`OUT_OF_MEMORY_EXIT`) rather than grade on with module caches (antlr's DFA, sympy's
   cache) that a failed allocation may have left half-updated; the pool replaces it and the answer
   counts wrong. "Ran out" is a ``MemoryError`` reaching the task, or the task taking the worker's
   peak resident memory past :data:`MEMORY_PRESSURE` of the cap: math-verify catches every
   ``Exception`` inside its parser and comparisons, ``MemoryError`` included, so the failed
   allocation of an answer such as ``2^{2^{31}}`` is invisible (it just parses to nothing), but the
   memory it took to get there is not. Every such event is logged and counted
   (:attr:`MathVerifier.stats`).
3. A backstop deadline for the whole batch guards against a broken pool: past it, the pending
   answers count as timed out and the pool is rebuilt on the next call.

The timeout needs no signals in the caller, so grading works from any thread. There is no
in-process math path: a thread cannot be interrupted inside one long C call (``9^{9^{9}}`` is
big-integer arithmetic), so only a separate process can be bounded.

Workers are started with ``forkserver`` by default (a clean process, not a fork of a trainer that
holds CUDA or threads), with math-verify preloaded so that replacing a killed worker is quick.
As with any non-fork start method, a script that grades must guard its entry point with
``if __name__ == "__main__":`` (the ``anytime-reasoner`` command and ``python -m`` already do).

``MathVerifier(worker_initializer=f)`` runs ``f()`` in each worker after its own set-up (memory
cap, imports, warm-up), before any task. Production passes none; the tests use it to trap
``eval``/``exec``/``os.system``/``subprocess.Popen`` inside the workers
(:func:`anytime_reasoner.rewards.fuzz.install_traps`) and to inject faults. ``f`` is pickled to
the workers, so it must be a module-level function (or a ``functools.partial`` of one).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import multiprocessing
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pebble import ProcessExpired, ProcessPool

from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.base import Grade
from anytime_reasoner.rewards.extract import ANSWER_MARKER, THINK_END, extract_answer, is_well_formed
from anytime_reasoner.rewards.normalize import same_text

logger = logging.getLogger(__name__)

WORKER_MODULE = "anytime_reasoner.rewards.equivalence"
OUT_OF_MEMORY_EXIT = 86  # exit status of a worker that ended itself after running out of memory
# A task that takes a worker's peak RSS past this share of its address-space cap ran out of memory:
# a big-integer computation doubles its operands, so when the next step cannot fit it holds about half.
MEMORY_PRESSURE = 0.5
Progress = Callable[[int], None]  # called with the number of items just finished
GroundTruths = Sequence[str] | str
WorkerInitializer = Callable[[], object]


@dataclass(frozen=True)
class GraderSettings:
    """How :class:`MathVerifier` grades; all times in seconds."""

    timeout: float = 10.0  # per answer, in a worker, before it counts as wrong (timed_out)
    workers: int = 2  # grading processes
    max_answer_chars: int = 2000  # longer extracted answers count as wrong without parsing
    memory_limit_mb: int | None = 4096  # address-space cap of each worker (None: no cap)
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    restart_allowance: float = 5.0  # per task in the backstop: replacing a killed worker
    backstop_slack: float = 60.0  # extra time before a whole batch is abandoned
    think_end: str = THINK_END  # the protocol's (see from_protocol)
    answer_marker: str = ANSWER_MARKER  # the protocol's answer delimiter without leading newlines

    @classmethod
    def from_protocol(cls, protocol: AnytimeProtocol, **settings: Any) -> GraderSettings:
        """Settings grading responses of ``protocol``: its think-end and answer marker; ``settings``
        fill the other fields (timeout, workers, …)."""
        return cls(think_end=protocol.think_end, answer_marker=protocol.answer_marker, **settings)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout: must be > 0 (got {self.timeout})")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1 (got {self.workers})")
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars: must be >= 1 (got {self.max_answer_chars})")


@dataclass(frozen=True)
class Verdict:
    """Whether one answer matched its ground truths."""

    correct: bool
    timed_out: bool = False


@dataclass
class GradingStats:
    """What the grading workers went through since the verifier was made (see :attr:`MathVerifier.stats`)."""

    tasks: int = 0  # answers sent to a worker
    timeouts: int = 0  # ran past the timeout: the worker was killed and replaced
    worker_deaths: int = 0  # the worker ended mid-task (crash, os._exit, OOM killer): replaced
    out_of_memory: int = 0  # of worker_deaths: the worker hit its memory cap and ended itself
    errors: int = 0  # an exception raised in a worker (the worker lives on)
    abandoned: int = 0  # pending at the backstop deadline (counted as timed out)
    pools_started: int = 0

    @property
    def worker_restarts(self) -> int:
        """Workers replaced after a task: killed at the timeout, or dead."""
        return self.timeouts + self.worker_deaths


@dataclass
class _Batch:
    """Answers waiting for a worker: one task per distinct (answer, ground truths)."""

    indices: dict[tuple[str, tuple[str, ...]], list[int]] = field(default_factory=dict)

    def add(self, index: int, answer: str, truths: tuple[str, ...]) -> None:
        self.indices.setdefault((answer, truths), []).append(index)


def as_truth_list(ground_truth: GroundTruths) -> tuple[str, ...]:
    """A ground truth given as one string or as several, as a tuple of strings."""
    return (ground_truth,) if isinstance(ground_truth, str) else tuple(ground_truth)


def _init_worker(memory_limit_mb: int | None, extra: WorkerInitializer | None = None) -> None:
    """Worker start-up; imports math-verify there, never in the caller; then ``extra()``, if any."""
    # heavy: math-verify and sympy load in the sandboxed grading workers only, never in the caller
    from anytime_reasoner.rewards.equivalence import init_worker

    init_worker(memory_limit_mb)
    if extra is not None:
        extra()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _memory_pressure_line() -> float:
    """The peak RSS, in bytes, past which a task counts as out of memory (infinite without a cap)."""
    cap = resource.getrlimit(resource.RLIMIT_AS)[0]
    return math.inf if cap == resource.RLIM_INFINITY else MEMORY_PRESSURE * cap


def _match_in_worker(answer: str, truths: tuple[str, ...]) -> bool:
    """The task a worker runs. Only ever call it in a worker: when out of memory it ends the process.

    Out of memory: a MemoryError, or this task taking the peak RSS across the pressure line (a worker
    already past it at start, under an address-space cap too small for its imports, is never ended for it).
    """
    from anytime_reasoner.rewards.equivalence import answers_match  # heavy: math-verify, in the worker only

    line, before = _memory_pressure_line(), _peak_rss_bytes()
    try:
        matched = answers_match(answer, truths)
    except MemoryError:
        matched = None
    if matched is None or before < line <= _peak_rss_bytes():
        os._exit(OUT_OF_MEMORY_EXIT)  # no cleanup: its caches may be half-updated; the pool replaces it
    return matched


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


class MathVerifier:
    """Grades responses against ground truths; safe on hostile input; reusable; closable.

    ``worker_initializer``: run in each worker after its set-up (see the module docstring); for tests.
    """

    def __init__(
        self,
        settings: GraderSettings | None = None,
        *,
        worker_initializer: WorkerInitializer | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = replace(settings or GraderSettings(), **overrides)
        self._worker_initializer = worker_initializer
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._stats = GradingStats()
        self._stats_lock = threading.Lock()

    @property
    def stats(self) -> GradingStats:
        """A copy of the counters: tasks, timeouts, worker deaths and restarts, errors, pools."""
        with self._stats_lock:
            return replace(self._stats)

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, k in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + k)

    # ---- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers. Further grading raises ``RuntimeError``."""
        with self._lock:
            self._closed = True
            self._stop_pool()

    def _stop_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
            try:
                pool.join(timeout=10)
            except TimeoutError:
                logger.error("grading workers did not stop within 10s")

    def _get_pool(self) -> ProcessPool:
        with self._lock:
            if self._closed:
                raise RuntimeError("MathVerifier is closed")
            if self._pool is None or not self._pool.active:
                self._stop_pool()
                self._pool = self._new_pool()
            return self._pool

    def _new_pool(self) -> ProcessPool:
        s = self.settings
        context = multiprocessing.get_context(s.start_method)
        if s.start_method == "forkserver":
            context.set_forkserver_preload([WORKER_MODULE])
        self._count(pools_started=1)
        return ProcessPool(
            max_workers=s.workers,
            initializer=_init_worker,
            initargs=(s.memory_limit_mb, self._worker_initializer),
            context=context,
        )

    def _discard_pool(self, pool: ProcessPool) -> None:
        with self._lock:
            if self._pool is pool:
                self._stop_pool()

    # ---- grading --------------------------------------------------------------------------

    def grade(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[GroundTruths],
        progress: Progress | None = None,
    ) -> list[Grade]:
        """One :class:`Grade` per response, in order (see the module docstring)."""
        if len(responses) != len(ground_truths):
            raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
        s = self.settings
        extracted = [extract_answer(r, s.think_end, s.answer_marker) for r in responses]
        verdicts = self.match(extracted, ground_truths, progress)
        return [
            Grade(correct=v.correct, well_formed=is_well_formed(r, s.think_end), extracted=a, timed_out=v.timed_out)
            for r, a, v in zip(responses, extracted, verdicts, strict=False)
        ]

    def match(
        self,
        answers: Sequence[str | None],
        ground_truths: Sequence[GroundTruths],
        progress: Progress | None = None,
    ) -> list[Verdict]:
        """One :class:`Verdict` per already-extracted answer (``None``: no answer, wrong)."""
        if len(answers) != len(ground_truths):
            raise ValueError(f"{len(answers)} answers but {len(ground_truths)} ground truths")
        verdicts: list[Verdict | None] = [None] * len(answers)
        batch = _Batch()
        for i, (answer, truth) in enumerate(zip(answers, ground_truths, strict=False)):
            truths = as_truth_list(truth)
            verdicts[i] = self._decide_cheaply(answer, truths)
            if verdicts[i] is None:
                batch.add(i, answer, truths)  # type: ignore[arg-type]
        if progress is not None:
            progress(len(answers) - sum(len(ix) for ix in batch.indices.values()))
        if batch.indices:
            self._run_batch(batch, verdicts, progress)
        return [v if v is not None else Verdict(False) for v in verdicts]

    def _decide_cheaply(self, answer: str | None, truths: tuple[str, ...]) -> Verdict | None:
        """A verdict without a worker, or None when math-verify is needed."""
        if answer is None or not truths:
            return Verdict(False)
        if len(answer) > self.settings.max_answer_chars:
            logger.warning(
                "answer of %d chars exceeds max_answer_chars=%d; counted wrong: %s",
                len(answer),
                self.settings.max_answer_chars,
                _short(answer),
            )
            return Verdict(False)
        if any(same_text(answer, t) for t in truths):
            return Verdict(True)
        return None

    def _run_batch(self, batch: _Batch, verdicts: list[Verdict | None], progress: Progress | None) -> None:
        def settle(key: tuple[str, tuple[str, ...]], verdict: Verdict) -> None:
            for i in batch.indices[key]:
                verdicts[i] = verdict
            if progress is not None:
                progress(len(batch.indices[key]))

        scheduled = self._schedule(batch)
        if scheduled is None:
            for key in batch.indices:
                settle(key, Verdict(False))
            return
        pool, futures = scheduled
        s = self.settings
        rounds = math.ceil(len(futures) / s.workers)
        deadline = time.monotonic() + rounds * (s.timeout + s.restart_allowance) + s.backstop_slack
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=max(0.0, deadline - time.monotonic()), return_when=cf.FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                settle(futures[future], self._verdict(future, futures[future][0]))
        if pending:
            logger.error("grading missed its backstop deadline; %d answers counted as timed out", len(pending))
            self._count(abandoned=len(pending))
            for future in pending:
                future.cancel()
                settle(futures[future], Verdict(False, timed_out=True))
            self._discard_pool(pool)

    def _schedule(self, batch: _Batch) -> tuple[ProcessPool, dict[cf.Future, Any]] | None:
        """One task per distinct answer; a pool that refuses them is rebuilt once, then given up."""
        for attempt in (1, 2):
            pool = self._get_pool()
            try:
                futures: dict[cf.Future, Any] = {
                    pool.schedule(_match_in_worker, args=key, timeout=self.settings.timeout): key for key in batch.indices
                }
                self._count(tasks=len(futures))
                return pool, futures
            except Exception as err:  # a pool that broke or failed to start
                action = "rebuilding it" if attempt == 1 else "counting the batch wrong"
                logger.error("grading pool refused tasks (%s: %s); %s", type(err).__name__, err, action)
                self._discard_pool(pool)
        return None

    def _verdict(self, future: cf.Future, answer: str) -> Verdict:
        """Read one finished task: a result, a timeout, or a worker failure (all but the first wrong)."""
        try:
            return Verdict(bool(future.result()))
        except TimeoutError:
            self._count(timeouts=1)
            logger.warning("grading timed out after %.1fs; counted wrong: %s", self.settings.timeout, _short(answer))
            return Verdict(False, timed_out=True)
        except ProcessExpired as err:
            self._count(worker_deaths=1)
            if err.exitcode == OUT_OF_MEMORY_EXIT:
                self._count(out_of_memory=1)
                limit = self.settings.memory_limit_mb
                logger.warning(
                    "grading worker ran out of memory (memory_limit_mb=%s); replaced; counted wrong: %s", limit, _short(answer)
                )
            else:
                logger.warning(
                    "grading worker died (%s, exit code %s); replaced; counted wrong: %s", err, err.exitcode, _short(answer)
                )
            return Verdict(False)
        except Exception as err:  # an error inside math-verify or a broken pool
            self._count(errors=1)
            logger.warning("grading failed (%s: %s); counted wrong: %s", type(err).__name__, err, _short(answer))
            return Verdict(False)
