"""Kill a training run with SIGKILL at random moments, restart it with the same command, and check
that it ends bit-identical to an uninterrupted run.

    python scripts/kill_resume_trials.py 10            # prints one line per trial, then "identical: k/10"
    python scripts/kill_resume_trials.py 1 --steps 3   # the CI version (tests/train/test_kill_resume.py, both async levels)

Every run is the embedded default (``model.path=tiny``: the bootstrapped base model on the synthetic
task) at a small scale, one thread, a checkpoint after every step. A trial starts the run and kills it
after a random delay between 0.2× and 0.9× the reference run's wall time (start-up, rollouts,
updates; a run that ends first is redone with a shorter delay) or, every third trial, the moment a
checkpoint write begins; one time in three it kills the restarted run again; then it runs the same
command to the end. It is *identical* when the final weights equal the reference's tensor for tensor
(``torch.equal``) and ``metrics.jsonl`` holds exactly one line per step with the reference's losses.
Each line says where the kill left the run folder: steps logged, complete checkpoints, and whether a
checkpoint was being written (a ``.tmp_step_*`` folder).

Asynchronous runs (``--async-level 1``: a rollout worker process samples one step ahead): odd trials
kill the *rollout worker* instead (its pid is in ``out/rollout_worker.pid``), at a random moment
once it is up; the trainer restarts it and the run goes on to the end by itself, no second command.
Even trials kill the *trainer* alone (SIGKILL to its pid, not its group) and check that the
orphaned worker exits by itself within 5 s, then clean up what else is left (the grading workers)
and rerun the same command. Every trial must end identical to the uninterrupted async run.

    python scripts/kill_resume_trials.py 10 --async-level 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCALE = [
    "model.path=tiny",
    "model.device=cpu",
    "rollout.n=4",
    "rollout.max_budget=48",
    "rollout.summary_max_tokens=8",
    "trainer.batch_size=4",
    "ppo.ppo_mini_batch_size=2",
    "ppo.lr=1e-4",
    "trainer.val_every=0",
    "trainer.save_every=1",
    "trainer.progress=false",
]


@dataclass
class Trial:
    kills: list[str]  # where each kill left the run
    identical: bool
    detail: str


def command(out: Path, steps: int, seed: int, async_level: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "anytime_reasoner",
        "train",
        "ar-uniform",
        *SCALE,
        f"trainer.steps={steps}",
        f"trainer.seed={seed}",
        f"trainer.out={out}",
        *([f"trainer.async_level={async_level}"] if async_level else []),
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:  # a zombie has exited
        return stat.read().split(") ")[1][0] != "Z"


def kill_trainer_alone(proc: subprocess.Popen, out: Path) -> str:
    """SIGKILL the trainer's pid only; wait up to 5 s for its rollout worker to exit by itself;
    then kill what is left of the group (grading workers) → what the worker did."""
    pid_file = out / "rollout_worker.pid"
    worker = int(pid_file.read_text()) if pid_file.is_file() else None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    waited, t0 = "no worker yet", time.perf_counter()
    if worker is not None:
        while alive(worker) and time.perf_counter() - t0 < 5:
            time.sleep(0.05)
        waited = (
            "worker still alive after 5 s" if alive(worker) else f"worker exited by itself in {time.perf_counter() - t0:.1f}s"
        )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return waited


def run(
    cmd: list[str],
    kill_after: float | None = None,
    kill_when: Path | None = None,
    target: str = "group",
    out: Path | None = None,
) -> tuple[bool, float, str]:
    """Run ``cmd``, killed with SIGKILL after ``kill_after`` s, or as soon as a checkpoint is being
    written under ``kill_when`` (a ``.tmp_step_*`` folder appears) → (finished by itself, seconds,
    what the kill did). ``target``: ``group`` (the run and its grading workers, as a crash would),
    ``trainer`` (its pid alone) or ``worker`` (the rollout worker: the run goes on and must finish)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    note = ""
    while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        writing = kill_when is not None and any((kill_when / "checkpoints").glob(".tmp_step_*"))
        if (kill_after is not None and elapsed > kill_after) or writing:
            if target == "worker":
                pid_file = out / "rollout_worker.pid" if out else None
                if pid_file is None or not pid_file.is_file():
                    time.sleep(0.05)  # not up yet: kill it once it is
                    continue
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                note, kill_after = f"worker killed at {elapsed:.1f}s", None
                continue
            if target == "trainer" and out is not None:
                note = kill_trainer_alone(proc, out)
            else:
                os.killpg(proc.pid, signal.SIGKILL)  # the run and its grading workers, as a crash would
                proc.wait()
            return False, elapsed, note
        time.sleep(0.005)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return True, time.perf_counter() - t0, note


def describe(out: Path, seconds: float) -> str:
    """Where a kill left the run folder."""
    metrics = out / "metrics.jsonl"
    logged = sum(1 for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()) if metrics.is_file() else 0
    root = out / "checkpoints"
    done = sorted(p.name for p in root.glob("step_*") if (p / "trainer_state.json").is_file()) if root.is_dir() else []
    writing = bool(list(root.glob(".tmp_step_*"))) if root.is_dir() else False
    return f"killed at {seconds:.1f}s: {logged} steps logged, checkpoints {done or 'none'}{', writing a checkpoint' if writing else ''}"


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def compare(out: Path, reference: Path, steps: int) -> tuple[bool, str]:
    import torch

    a, b = weights(out), weights(reference)
    same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    ref_lines = [
        json.loads(line) for line in (reference / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    one_per_step = [m["step"] for m in lines] == list(range(1, steps + 1))
    same_losses = [m["loss"] for m in lines] == [m["loss"] for m in ref_lines]
    return (
        same_weights and one_per_step and same_losses,
        f"weights {'equal' if same_weights else 'DIFFER'}, metrics steps {[m['step'] for m in lines]}{'' if same_losses else ', losses DIFFER'}",
    )


def first_kill(cmd: list[str], out: Path, rng: random.Random, ref_seconds: float, in_checkpoint: bool, target: str) -> str:
    """Start the run and kill it (inside its first checkpoint write, or after a random delay); a run
    that ends before the kill is redone from scratch with a shorter delay. → where the kill left it."""
    if in_checkpoint:
        finished, seconds, note = run(cmd, kill_when=out, target=target, out=out)
        if not finished:
            return describe(out, seconds) + (f", {note}" if note else "")
        shutil.rmtree(out)
    fraction = rng.uniform(0.2, 0.9)
    while True:
        finished, seconds, note = run(cmd, kill_after=fraction * ref_seconds, target=target, out=out)
        if not finished:
            return describe(out, seconds) + (f", {note}" if note else "")
        if target == "worker" and note:  # the worker died, the trainer went on to the end
            return f"{note}; the run finished by itself"
        shutil.rmtree(out)
        fraction /= 2


def trial(i: int, args: argparse.Namespace, reference: Path, ref_seconds: float, root: Path) -> Trial:
    """One trial: a kill (every third trial's inside a checkpoint write), a second kill of the
    restarted run one time in three, then the same command to the end. Asynchronous runs: odd
    trials kill the rollout worker, even ones the trainer alone."""
    rng = random.Random(f"{args.seed}:{i}")
    out = root / f"trial_{i}"
    cmd = command(out, args.steps, args.seed, args.async_level)
    target = ("worker" if i % 2 else "trainer") if args.async_level else "group"
    kills = [first_kill(cmd, out, rng, ref_seconds, in_checkpoint=i % 3 == 2 and target != "worker", target=target)]
    finished = kills[0].endswith("finished by itself")
    if not finished and rng.random() < 1 / 3:
        finished, seconds, _ = run(cmd, kill_after=rng.uniform(0.2, 0.9) * ref_seconds)
        kills.append(f"finished before the second kill ({seconds:.1f}s)" if finished else describe(out, seconds))
    if not finished:
        run(cmd)
    identical, detail = compare(out, reference, args.steps)
    return Trial(kills, identical, detail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trials", type=int, nargs="?", default=10)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed at the end)")
    p.add_argument("--async-level", type=int, default=0, help="trainer.async_level of every run (>= 1: kill the worker too)")
    args = p.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    try:
        reference = root / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        _, ref_seconds, _ = run(command(reference, args.steps, args.seed, args.async_level))
        print(f"reference: {args.steps} steps in {ref_seconds:.1f}s", flush=True)
        identical = 0
        for i in range(args.trials):
            shutil.rmtree(root / f"trial_{i}", ignore_errors=True)
            result = trial(i, args, reference, ref_seconds, root)
            identical += result.identical
            print(
                f"trial {i}: {' | '.join(result.kills)} -> {'identical' if result.identical else 'NOT identical'} ({result.detail})",
                flush=True,
            )
        print(f"identical: {identical}/{args.trials}")
        return 0 if identical == args.trials else 1
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
