"""Training runs under ``torchrun`` for the multi-process tests (``test_distributed.py``), one after
another in one launch (each with a process group of its own: a new group after the last one's
shutdown), so the ranks pay their start-up (interpreter, torch, transformers) once.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/train/dist_worker.py PLAN.json

``PLAN.json``: ``{"model": MODEL_DIR, "runs": [{"out": OUT, "steps": N, "dump": DUMP_DIR | null,
"overrides": {key: value}}, ...]}``. Each run builds the trainer from the tiny-model test config
(``test_trainer_smoke._config``) with the parity verifier, and with a dump folder saves what each
rank's update receives at each step (its rollouts and advantages) to ``DUMP/step{t}_rank{r}.pt``, so
a test can rebuild the global batch and train one process on it; after training, every rank streams
the trained weights the way a vLLM engine receives them (``train.weight_sync.policy_weights``: one
gathered tensor at a time) into ``DUMP/streamed_rank{r}.pt``; after the process group's shutdown it
writes the names of the gloo threads still running to ``DUMP/threads_after_shutdown_rank{r}.txt``
(Linux).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    plan = json.loads(Path(argv[0]).read_text())
    for i, run in enumerate(plan["runs"]):
        _run(i, plan["model"], run["out"], run["steps"], Path(run["dump"]) if run["dump"] else None, run["overrides"])
    return 0


def _run(index: int, model_dir: str, out: str, steps: int, dump: Path | None, overrides: dict[str, object]) -> None:
    """Run ``index`` in a process group of its own, shut down before the next. Its group meets under
    a key prefix of its own in torchrun's store: the last group's addresses are still there."""
    import torch.distributed as dist

    from anytime_reasoner.train.runtime import init_runtime, shutdown
    from tests.train.test_trainer_smoke import _config

    cfg = _config(model_dir, out, steps=steps, **overrides)
    store, rank, world_size = next(dist.rendezvous("env://"))
    dist.init_process_group("gloo", store=dist.PrefixStore(f"run{index}", store), rank=rank, world_size=world_size)
    runtime = init_runtime(cfg.model.device, cfg.model.dtype)  # in the group just made
    try:
        _train(cfg, runtime, dump)
    finally:
        shutdown(runtime)
    tasks = Path("/proc/self/task")  # Linux: one folder per thread, its name in comm
    if dump is not None and tasks.is_dir():  # what still runs after shutdown: gloo's threads must be gone
        gloo = sorted(n for n in (t.read_text().strip() for t in tasks.glob("*/comm")) if "gloo" in n)
        (dump / f"threads_after_shutdown_rank{runtime.rank}.txt").write_text("\n".join(gloo))


def _train(cfg, runtime, dump: Path | None) -> None:
    """Train (recording each update's inputs into ``dump``), then stream the trained weights;
    the trainer is gone when this returns, as in ``anytime-reasoner train``."""
    import torch

    from anytime_reasoner.train.build import build_trainer
    from tests.train.test_trainer_smoke import ParityVerifier

    trainer = build_trainer(cfg, runtime)
    trainer.verifier.close()
    trainer.verifier = ParityVerifier()
    if dump is not None:
        update = trainer.update
        state = {"step": trainer.start_step}

        def recording_update(rollouts, think_adv, summ_adv):
            state["step"] += 1
            path = dump / f"step{state['step']}_rank{runtime.rank}.pt"
            torch.save({"rollouts": rollouts, "think_adv": think_adv, "summ_adv": summ_adv}, path)
            return update(rollouts, think_adv, summ_adv)

        trainer.update = recording_update  # type: ignore[method-assign]
    trainer.fit()
    if dump is not None:
        from anytime_reasoner.train.weight_sync import policy_weights

        streamed = {k: v.detach().cpu().clone() for k, v in policy_weights(trainer.policy, torch.float32)}
        torch.save(streamed, dump / f"streamed_rank{runtime.rank}.pt")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
