"""Child commands of ``demo`` / ``compare``: forked from a host that imported torch, transformers and
the train/eval code once (``jobs.run_jobs``) vs a fresh ``python -m anytime_reasoner`` process per
job (``subprocess``, how the jobs ran before; polled every 0.1 s, not the old runner's 1 s).

Each repetition runs the same ``--jobs`` toy commands (``train`` one step of the embedded task at a
tiny scale from the shipped base model, then ``eval`` of the trained model on 4 questions × 2
budgets), ``--parallel`` at a time, once per mode, the modes alternating so both see the same
machine load. Printed: the median wall time of each mode, their ratio, and the median seconds of
a job. The tiny runs are what ``compare``'s toy-scale tests and short ``compare`` sweeps are made
of; at the demo's scale a job's imports are a few seconds of minutes.

    python benchmarks/bench_jobs.py                     # 8 jobs, 2 at a time, 3 repetitions
    python benchmarks/bench_jobs.py --jobs 4 --reps 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anytime_reasoner.jobs import CHILD_ENV, Job, run_jobs
from anytime_reasoner.tasks.bootstrap import ensure_base_model

TOY_TRAIN = [
    "rollout.n=2", "rollout.max_budget=16", "rollout.summary_max_tokens=4", "trainer.steps=1", "trainer.batch_size=2",
    "trainer.val_every=0", "trainer.progress=false", "model.device=cpu",
]  # fmt: skip


def plan(root: Path, base: Path, held_out: Path, pairs: int) -> list[Job]:
    jobs = []
    for i in range(pairs):
        run = root / f"run{i}"
        train = Job(f"train {i}", ["train", f"model.path={base}", f"trainer.out={run}", *TOY_TRAIN], run / "train.log")
        evaluate = Job(
            f"eval {i}",
            ["eval", f"model={run / 'final'}", f"data={held_out}", "budgets=8,16", "samples=1", "summary_max_tokens=4",
             "device=cpu", "progress=false", f"out={root / f'eval{i}'}", "max_prompt_tokens=256"],
            root / f"eval{i}" / "eval.log",
            after=(train.name,),
        )  # fmt: skip
        jobs += [train, evaluate]
    return jobs


def run_subprocesses(jobs: list[Job], parallel: int) -> dict[str, float]:
    """The same jobs, each a fresh process (dependencies respected, at most ``parallel`` at once)."""
    pending, running, done, seconds = list(jobs), {}, set(), {}
    while pending or running:
        for job in [j for j in pending if set(j.after) <= done][: parallel - len(running)]:
            pending.remove(job)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with job.log.open("w") as log:
                command = [sys.executable, "-m", "anytime_reasoner", *job.args]
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CHILD_ENV})
            running[job.name] = (process, time.perf_counter())
        time.sleep(0.1)
        for name, (process, t0) in list(running.items()):
            if process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit(f"{name} failed; see its log")
                seconds[name] = time.perf_counter() - t0
                done.add(name)
                del running[name]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="commands per repetition (train + eval pairs)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    base = ensure_base_model(progress=False)
    modes = ("forked from the host", "a fresh process each")
    walls: dict[str, list[float]] = {m: [] for m in modes}
    per_job: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        held_out = Path(tmp) / "held.json"
        held_out.write_text(json.dumps([{"problem": f"What is {a}+{a}?", "answer": str(2 * a)} for a in range(4)]))
        for rep in range(args.reps):
            for mode in modes:
                jobs = plan(Path(tmp) / f"{rep}-{mode[0]}", base, held_out, max(1, args.jobs // 2))
                t0 = time.perf_counter()
                if mode == modes[0]:
                    seconds = run_jobs(jobs, args.parallel, lambda done: None)
                else:
                    seconds = run_subprocesses(jobs, args.parallel)
                walls[mode].append(time.perf_counter() - t0)
                per_job[mode] += list(seconds.values())
    fast, slow = (statistics.median(walls[m]) for m in modes)
    print(f"{len(jobs)} jobs, {args.parallel} at a time, {args.reps} repetitions (medians):")
    for mode in modes:
        print(f"  {mode:40s} {statistics.median(walls[mode]):6.1f} s in all, {statistics.median(per_job[mode]):5.1f} s a job")
    print(f"  ratio: {slow / fast:.2f}x faster forked from the host")


if __name__ == "__main__":
    main()
