"""Kill a training run with SIGKILL at random moments, restart it with the same command, and check
that it ends bit-identical to an uninterrupted run.

    python scripts/kill_resume_trials.py 10            # prints one line per trial, then "identical: k/10"
    python scripts/kill_resume_trials.py 2 --steps 3   # the CI version (tests/train/test_kill_resume.py)

Every run is the embedded default (``model.path=tiny``: the bootstrapped base model on the synthetic
task) at a small scale, one thread, a checkpoint after every step. A trial starts the run and kills it
after a random delay between 0.2× and 0.9× the reference run's wall time (start-up, rollouts,
updates; a run that ends first is redone with a shorter delay) or, every third trial, the moment a
checkpoint write begins; one time in three it kills the restarted run again; then it runs the same
command to the end. It is *identical* when the final weights equal the reference's tensor for tensor
(``torch.equal``) and ``metrics.jsonl`` holds exactly one line per step with the reference's losses.
Each line says where the kill left the run folder: steps logged, complete checkpoints, and whether a
checkpoint was being written (a ``.tmp_step_*`` folder).
"""

from __future__ import annotations

import argparse
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


def command(out: Path, steps: int, seed: int) -> list[str]:
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
    ]


def run(cmd: list[str], kill_after: float | None = None, kill_when: Path | None = None) -> tuple[bool, float]:
    """Run ``cmd``, killed with SIGKILL after ``kill_after`` s, or as soon as a checkpoint is being
    written under ``kill_when`` (a ``.tmp_step_*`` folder appears) → (finished by itself, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        writing = kill_when is not None and any((kill_when / "checkpoints").glob(".tmp_step_*"))
        if (kill_after is not None and elapsed > kill_after) or writing:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its grading workers, as a crash would
            proc.wait()
            return False, elapsed
        time.sleep(0.005)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return True, time.perf_counter() - t0


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


def first_kill(cmd: list[str], out: Path, rng: random.Random, ref_seconds: float, in_checkpoint: bool) -> float:
    """Start the run and kill it (inside its first checkpoint write, or after a random delay); a run
    that ends before the kill is redone from scratch with a shorter delay. → seconds at the kill."""
    if in_checkpoint:
        finished, seconds = run(cmd, kill_when=out)
        if not finished:
            return seconds
        shutil.rmtree(out)
    fraction = rng.uniform(0.2, 0.9)
    while True:
        finished, seconds = run(cmd, kill_after=fraction * ref_seconds)
        if not finished:
            return seconds
        shutil.rmtree(out)
        fraction /= 2


def trial(i: int, args: argparse.Namespace, reference: Path, ref_seconds: float, root: Path) -> Trial:
    """One trial: a kill (every third trial's inside a checkpoint write), a second kill of the
    restarted run one time in three, then the same command to the end."""
    rng = random.Random(f"{args.seed}:{i}")
    out = root / f"trial_{i}"
    cmd = command(out, args.steps, args.seed)
    kills = [describe(out, first_kill(cmd, out, rng, ref_seconds, in_checkpoint=i % 3 == 2))]
    finished = False
    if rng.random() < 1 / 3:
        finished, seconds = run(cmd, kill_after=rng.uniform(0.2, 0.9) * ref_seconds)
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
    args = p.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    try:
        reference = root / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        _, ref_seconds = run(command(reference, args.steps, args.seed))
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
