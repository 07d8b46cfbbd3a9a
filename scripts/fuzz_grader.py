"""Fuzz the grader: N hostile model outputs through ``MathVerifier.grade``, and counts of what went wrong.

    python scripts/fuzz_grader.py [N=10000] [--seed 0] [--workers 2] [--timeout 10]
                                  [--batch-size 200] [--memory-limit-mb 4096] [--no-traps] [--verbose]

The outputs come from ``anytime_reasoner.rewards.fuzz`` (the generators ``tests/rewards`` use), so
the script runs from a fresh clone with the package installed. Each item is one ``grade()`` call
from one of ``--workers`` caller threads, so every grading worker is kept busy and an item's wall
time is its own (extraction, the pipe, the worker, replacing a killed worker), not its wait in a
queue. A batch is a group of ``--batch-size`` items graded that way; the bar (stderr) counts items.

Printed (stdout): items; crashes (exceptions escaping ``grade``); items graded correct (every
case's ground truth is one its answer cannot equal, so this must be 0); timeouts; worker restarts
(killed at the timeout or dead), deaths, out-of-memory exits, errors raised inside workers, pools
started; trapped executions (with the traps on, as in the tests: process creation or code-like
``eval``/``exec`` inside a worker; must be 0) and whether the payloads' canary file appeared; the
longest batch and item; peak RSS of this process and of any grading process (``RUSAGE_CHILDREN``
once the workers and the forkserver that forked them have been reaped: stopping the forkserver
uses the private ``multiprocessing.forkserver._forkserver._stop``); total seconds; timeouts per
family. Exit status 1 if anything that must be 0 is not.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anytime_reasoner.rewards import MathVerifier
    from anytime_reasoner.rewards.fuzz import Case


@dataclass
class FuzzReport:
    """What one fuzz run counted."""

    items: int = 0
    crashes: int = 0
    correct: int = 0
    timeouts: int = 0
    worker_restarts: int = 0
    worker_deaths: int = 0
    out_of_memory: int = 0
    worker_errors: int = 0
    pools_started: int = 0
    trapped: int = 0
    canary_created: bool = False
    max_batch_s: float = 0.0
    max_item_s: float = 0.0
    main_peak_rss_mb: float = 0.0
    worker_peak_rss_mb: float = 0.0
    total_s: float = 0.0
    timeouts_by_family: Counter[str] = field(default_factory=Counter)
    crash_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing that must be zero is non-zero."""
        return self.crashes == 0 and self.correct == 0 and self.trapped == 0 and not self.canary_created


def _grade_one(verifier: MathVerifier, case: Case, report: FuzzReport, lock: threading.Lock) -> float:
    """Grade one case, record it in ``report``, and return its wall time."""
    start = time.monotonic()
    try:
        (grade,) = verifier.grade([case.response], [case.truth])
        error = None
    except Exception as err:  # a crash: what the fuzzing looks for
        grade, error = None, f"{case.family}/{case.shape}: {type(err).__name__}: {err}"
    seconds = time.monotonic() - start
    with lock:
        report.items += 1
        report.max_item_s = max(report.max_item_s, seconds)
        if error is not None:
            report.crashes += 1
            report.crash_examples.append(error[:300])
        elif grade is not None:
            report.correct += grade.correct
            if grade.timed_out:
                report.timeouts += 1
                report.timeouts_by_family[case.family] += 1
    return seconds


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _reap_forkserver() -> None:
    """Stop the forkserver so that its children's peak RSS reaches RUSAGE_CHILDREN (private API)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and hasattr(server, "_stop"):
        server._stop()


def _grade_all(
    verifier: MathVerifier, cases: Iterator[Case], n: int, batch_size: int, workers: int, progress: bool
) -> FuzzReport:
    """Grade ``n`` cases in batches, ``workers`` grade() calls at a time."""
    from tqdm import tqdm

    report, lock = FuzzReport(), threading.Lock()
    with (
        ThreadPoolExecutor(max_workers=workers) as threads,
        tqdm(total=n, unit="item", file=sys.stderr, disable=not progress) as bar,
    ):
        while report.items < n:
            batch = list(islice(cases, min(batch_size, n - report.items)))
            batch_start = time.monotonic()
            for _ in threads.map(lambda case: _grade_one(verifier, case, report, lock), batch):
                bar.update(1)
            report.max_batch_s = max(report.max_batch_s, time.monotonic() - batch_start)
    return report


def run_fuzz(
    n: int,
    seed: int = 0,
    workers: int = 2,
    timeout: float = 10.0,
    batch_size: int = 200,
    memory_limit_mb: int | None = 4096,
    traps: bool = True,
    progress: bool = True,
) -> FuzzReport:
    """Grade ``n`` hostile cases from ``seed``; see the module docstring. Stops the forkserver at the end."""
    from anytime_reasoner.rewards import MathVerifier
    from anytime_reasoner.rewards.fuzz import hostile_cases, install_traps, read_trap_report

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-grader-") as scratch:
        canary, trap_report = os.path.join(scratch, "pwned"), os.path.join(scratch, "traps.txt")
        init = partial(install_traps, trap_report) if traps else None
        settings = {"timeout": timeout, "workers": workers, "memory_limit_mb": memory_limit_mb}
        with MathVerifier(worker_initializer=init, **settings) as verifier:
            report = _grade_all(verifier, hostile_cases(n, seed, canary), n, batch_size, workers, progress)
            stats = verifier.stats
        _reap_forkserver()
        report.trapped = len(read_trap_report(trap_report))
        report.canary_created = os.path.exists(canary)
    report.total_s = time.monotonic() - start
    report.worker_restarts, report.worker_deaths = stats.worker_restarts, stats.worker_deaths
    report.out_of_memory, report.worker_errors, report.pools_started = stats.out_of_memory, stats.errors, stats.pools_started
    report.main_peak_rss_mb = _peak_rss_mb(resource.RUSAGE_SELF)
    report.worker_peak_rss_mb = _peak_rss_mb(resource.RUSAGE_CHILDREN)
    return report


def format_report(report: FuzzReport, traps: bool = True) -> str:
    """The printed summary, one ``name: value`` per line."""
    families = ", ".join(f"{k}={v}" for k, v in sorted(report.timeouts_by_family.items())) or "none"
    lines = [
        f"items: {report.items}",
        f"crashes: {report.crashes}",
        f"graded correct: {report.correct}",
        f"timeouts: {report.timeouts}",
        f"worker restarts: {report.worker_restarts}",
        f"worker deaths: {report.worker_deaths}",
        f"out of memory: {report.out_of_memory}",
        f"errors in workers: {report.worker_errors}",
        f"pools started: {report.pools_started}",
        f"trapped executions: {report.trapped if traps else 'traps off'}",
        f"canary file created: {'yes' if report.canary_created else 'no'}",
        f"max wall per batch: {report.max_batch_s:.2f} s",
        f"max wall per item: {report.max_item_s:.2f} s",
        f"peak RSS main process: {report.main_peak_rss_mb:.0f} MB",
        f"peak RSS grading process: {report.worker_peak_rss_mb:.0f} MB",
        f"total: {report.total_s:.1f} s ({report.items / max(report.total_s, 1e-9):.1f} items/s)",
        f"timeouts by family: {families}",
    ]
    lines += [f"crash: {example}" for example in report.crash_examples[:10]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="hostile outputs to grade (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="grading processes, and caller threads")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per answer in a worker (GraderSettings.timeout)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--memory-limit-mb", type=int, default=4096)
    parser.add_argument("--no-traps", action="store_true", help="grade without the execution traps in the workers")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="log each timeout and worker failure (stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    report = run_fuzz(
        args.n,
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        batch_size=args.batch_size,
        memory_limit_mb=args.memory_limit_mb,
        traps=not args.no_traps,
        progress=not args.no_progress,
    )
    print(format_report(report, traps=not args.no_traps), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
