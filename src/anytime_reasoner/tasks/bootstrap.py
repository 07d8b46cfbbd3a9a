"""Bootstrap the embedded base model: SFT of the tiny Qwen2 on the synthetic task's worked solutions.

``ensure_base_model()`` returns a folder that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load. The folder is named by a hash of every setting (task, model,
tokenizer, SFT, seed, format version), so a second call finds it and returns at once; it is written
to a temporary folder and renamed, so an interrupted bootstrap never leaves a half-written model.

Shipped weights: the package carries the default recipe's base model (seed 0) as
``tasks/weights/tiny-<key>.safetensors`` (1.8 MB) with its ``bootstrap.json``. When the cache lacks
the folder and the package holds weights of that key, the folder is assembled from them (the
tokenizer and config are rebuilt from the spec; about a second) instead of running the SFT (about
150-185 s on this project's 2-core machine). ``anytime-reasoner bootstrap`` runs the SFT and checks
its result against the shipped weights (:func:`compare_with_shipped`); it is also how they are
rebuilt when the recipe changes (a changed recipe has another key, so stale weights are never used).

Training rows are built at the token level exactly like the anytime rollout builds its prompts
(docs/ALGORITHM.md §3), so what the model sees in SFT is what it sees in RL:

* full rows: ``chat(question) + thinking + </think> + "\\n\\n**Final Answer**\\n" + \\boxed{N} + eos``
  (loss on everything after the prompt);
* cut rows (``cut_fraction`` of them): ``chat(question) + thinking[:c] + "...\\n\\n...\\n\\n" + </think>
  + "\\n\\n**Final Answer**\\n" + \\boxed{guess} + eos`` with c a random token count, the inserted text
  masked out of the loss (it is never sampled), and a naive guess (see ``synthetic.cut_summary``).

Half of the prompts carry the seed's instruction suffix (docs/ALGORITHM.md §8), half are the bare question, so the
base model answers both forms the data pipeline may produce. Prompts are rendered by the project's
one prompt rule, :func:`anytime_reasoner.data.prompts.encode_prompt` (the suffixed form is the data
pipeline's own row of the problem), so they are token for token what RL and evaluation feed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from anytime_reasoner import protocol
from anytime_reasoner.config import BootstrapConfig
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.data.schema import Example as Row
from anytime_reasoner.errors import UserError, check_writable
from anytime_reasoner.tasks import synthetic
from anytime_reasoner.tasks.tiny_model import TinyModelSpec, build_tiny_model, count_parameters
from anytime_reasoner.tasks.tokenizer import TokenizerSpec, build_tokenizer

FORMAT_VERSION = 1  # bump when the bootstrap recipe changes in a way the settings do not show
MARKER_FILE = "bootstrap.json"
IGNORE = -100
# One intra-op thread, always: the thread count changes the float summation order and so the model
# (2 threads gave another base model, final SFT loss 0.158 vs 0.095, that learns far less in RL),
# while the cache key holds only the recipe. 2 threads would be 1.5x faster on an idle 2-core Xeon.
THREADS = 1
SHIPPED_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = "model.safetensors"  # what save_pretrained writes for the tiny model


@dataclass(frozen=True)
class SFTSpec:
    steps: int = 2600  # the copy-by-label skill appears after ~1500 steps at batch 8 (loss 0.3 → 0.1)
    batch_size: int = 8  # at equal compute, more small steps learned faster than fewer large ones
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    cut_fraction: float = 0.3
    bare_question_fraction: float = 0.5


@dataclass(frozen=True)
class BootstrapSpec:
    """Every setting that determines the base model (and so its cache folder)."""

    task: synthetic.TaskSpec = field(default_factory=synthetic.TaskSpec)
    model: TinyModelSpec = field(default_factory=TinyModelSpec)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    sft: SFTSpec = field(default_factory=SFTSpec)

    def key(self, seed: int) -> str:
        blob = json.dumps({"spec": asdict(self), "seed": seed, "version": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    loss_mask: list[int]  # 1 = trained on, 0 = prompt or inserted text


@dataclass(frozen=True)
class Segments:
    """Token ids of the pieces a training row is made of."""

    think_end: int
    eos: int
    cut_marker: list[int]
    delimiter: list[int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerFast) -> Segments:
        think_end = tokenizer.convert_tokens_to_ids(protocol.THINK_END)
        assert isinstance(think_end, int)  # one token in, one id out
        return cls(
            think_end=think_end,
            eos=tokenizer.eos_token_id,
            cut_marker=_encode(tokenizer, protocol.CUT_MARKER),
            delimiter=_encode(tokenizer, protocol.ANSWER_DELIMITER),
        )


def default_cache_dir() -> Path:
    return Path(os.environ.get("ANYTIME_REASONER_CACHE", "~/.cache/anytime-reasoner")).expanduser()


def _encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def prompt_messages(problem: synthetic.Problem, bare: bool) -> list[dict[str, str]]:
    """The user turn of a training row: the bare question, or the data pipeline's row of the
    problem (the question plus the docs/ALGORITHM.md §8 instruction, ``data.schema.Example.from_problem``) — the very
    messages RL and evaluation render for a synthetic problem."""
    if bare:
        return [{"role": "user", "content": problem.question}]
    return Row.from_problem("sft", "synthetic", problem.question, (problem.answer,)).messages


def prompt_ids(tokenizer: PreTrainedTokenizerFast, problem: synthetic.Problem, bare: bool) -> list[int]:
    """The chat prompt of a problem, ending with ``<think>\\n``, rendered by the one prompt rule
    (:func:`anytime_reasoner.data.prompts.encode_prompt`)."""
    return encode_prompt(tokenizer, prompt_messages(problem, bare), protocol.THINK_START)


def encode_example(
    problem: synthetic.Problem,
    tokenizer: PreTrainedTokenizerFast,
    segments: Segments,
    rng: random.Random,
    sft: SFTSpec,
) -> Example:
    prompt = prompt_ids(tokenizer, problem, bare=rng.random() < sft.bare_question_fraction)
    solution = problem.solution(rng)
    thinking = _encode(tokenizer, solution.thinking)
    if rng.random() < sft.cut_fraction:
        cut = rng.randrange(len(thinking))
        seen = tokenizer.decode(thinking[:cut])
        assert isinstance(seen, str)  # one sequence of ids in, one text out
        guess = problem.cut_summary(seen, rng)
        head = thinking[:cut]
        inserted = segments.cut_marker + [segments.think_end] + segments.delimiter
        tail = _encode(tokenizer, guess.summary) + [segments.eos]
    else:
        head = thinking + [segments.think_end] + segments.delimiter
        inserted = []
        tail = _encode(tokenizer, solution.summary) + [segments.eos]
    ids = prompt + head + inserted + tail
    mask = [0] * len(prompt) + [1] * len(head) + [0] * len(inserted) + [1] * len(tail)
    return Example(input_ids=ids, loss_mask=mask)


def examples(tokenizer: PreTrainedTokenizerFast, task: synthetic.TaskSpec, sft: SFTSpec, seed: int) -> Iterator[Example]:
    rng = random.Random(f"sft-{seed}")
    segments = Segments.of(tokenizer)
    for problem in synthetic.train_stream(seed, task):
        yield encode_example(problem, tokenizer, segments, rng, sft)


def batches(stream: Iterator[Example], batch_size: int, pool: int = 8) -> Iterator[list[Example]]:
    """Batches of similar length (less padding): draw ``pool`` batches, sort by length, split."""
    while True:
        drawn = sorted((next(stream) for _ in range(batch_size * pool)), key=lambda e: len(e.input_ids))
        chunks = [drawn[i : i + batch_size] for i in range(0, len(drawn), batch_size)]
        order = random.Random(len(drawn[0].input_ids) * 7919 + len(drawn[-1].input_ids)).sample(chunks, len(chunks))
        yield from order


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        kept = torch.tensor(example.loss_mask, dtype=torch.bool)
        labels[row, :n] = torch.where(kept, ids[row, :n], IGNORE)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def lr_factor(step: int, sft: SFTSpec) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < sft.warmup_steps:
        return (step + 1) / sft.warmup_steps
    progress = (step - sft.warmup_steps) / max(1, sft.steps - sft.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_sft(spec: BootstrapSpec, seed: int, progress: bool = True):
    """Build the tokenizer and the model and run SFT; returns (model, tokenizer, final loss)."""
    tokenizer = build_tokenizer(spec.tokenizer)
    model = build_tiny_model(spec.model, tokenizer, seed=seed)
    sft = spec.sft
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.lr, betas=(0.9, 0.98), weight_decay=sft.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, sft))
    stream = batches(examples(tokenizer, spec.task, sft, seed), sft.batch_size)
    model.train()
    ema = None
    bar = tqdm(range(sft.steps), desc="bootstrap tiny model (SFT)", disable=not progress, leave=False)
    for _ in bar:
        batch = collate(next(stream), tokenizer.pad_token_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), sft.grad_clip)
        optimizer.step()
        scheduler.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return model, tokenizer, float(ema or 0.0)


def bootstrap(
    out_dir: str | Path,
    seed: int = 0,
    spec: BootstrapSpec = BootstrapSpec(),
    progress: bool = True,
) -> Path:
    """Train the base model and save it (model, tokenizer, ``bootstrap.json``) in ``out_dir``."""
    out_dir = Path(out_dir)
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        model, tokenizer, loss = train_sft(spec, seed, progress)
    finally:
        torch.set_num_threads(previous)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    info = {
        "key": spec.key(seed),
        "seed": seed,
        "spec": asdict(spec),
        "parameters": count_parameters(model),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "threads": THREADS,
        "final_loss": round(loss, 4),
        "version": FORMAT_VERSION,
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def shipped_weights(spec: BootstrapSpec, seed: int) -> Path | None:
    """The package's weights for this recipe and seed, or None when it ships none."""
    path = SHIPPED_DIR / f"tiny-{spec.key(seed)}.safetensors"
    return path if path.is_file() else None


def unpack_shipped(out_dir: str | Path, weights: Path, spec: BootstrapSpec, seed: int) -> Path:
    """Write the base model folder from shipped ``weights``: the tokenizer and config rebuilt from
    ``spec``, the weights loaded into the model (every tensor present, with its shape), and the
    bootstrap's own ``bootstrap.json`` with ``"source": "shipped"``."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(spec.tokenizer)
    model = build_tiny_model(spec.model, tokenizer, seed=seed)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{weights}: tensors do not fit the recipe's model (missing {missing}, unexpected {unexpected})")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    info = json.loads(weights.with_suffix(".json").read_text())
    (out_dir / MARKER_FILE).write_text(json.dumps({**info, "source": "shipped"}, indent=2) + "\n")
    return out_dir


def compare_with_shipped(folder: str | Path, spec: BootstrapSpec, seed: int) -> str | None:
    """How a freshly bootstrapped ``folder`` differs from the shipped weights of its recipe: None
    when every tensor is equal bit for bit, else one line (tensors differing, largest difference).
    Raises ``FileNotFoundError`` when the package ships no weights for this recipe and seed."""
    weights = shipped_weights(spec, seed)
    if weights is None:
        raise FileNotFoundError(f"no shipped weights for tiny-{spec.key(seed)} in {SHIPPED_DIR}")
    shipped, built = load_file(str(weights)), load_file(str(Path(folder) / WEIGHTS_FILE))
    if shipped.keys() != built.keys():
        return f"tensor names differ: {sorted(shipped.keys() ^ built.keys())}"
    differing = [name for name in shipped if not torch.equal(shipped[name], built[name])]
    if not differing:
        return None
    largest = max(float((shipped[n] - built[n]).abs().max()) for n in differing)
    return f"{len(differing)} of {len(shipped)} tensors differ, largest difference {largest:.3g}"


def ensure_base_model(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    spec: BootstrapSpec = BootstrapSpec(),
    progress: bool = True,
    use_shipped: bool = True,
) -> Path:
    """The cached base model's folder (``<cache>/tiny-<hash>``); when missing, assembled from the
    shipped weights of this recipe (``use_shipped`` and the package has them), else bootstrapped."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-{spec.key(seed)}"
    if (target / MARKER_FILE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    weights = shipped_weights(spec, seed) if use_shipped else None
    try:
        if weights is not None:
            unpack_shipped(tmp, weights, spec, seed)
        else:
            bootstrap(tmp, seed=seed, spec=spec, progress=progress)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / MARKER_FILE).is_file():  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def preflight_bootstrap(cfg: BootstrapConfig) -> None:
    """``out`` must be a folder this process can create or write into, and not hold another model."""
    check_writable(cfg.out, "out")
    if (Path(cfg.out) / WEIGHTS_FILE).exists():
        raise UserError(f"out: {cfg.out} already holds a model ({WEIGHTS_FILE}); name a new folder")


def run_bootstrap(cfg: BootstrapConfig) -> int:
    """Run the SFT of the default recipe into ``cfg.out`` and compare it with the shipped weights."""
    spec = BootstrapSpec()
    print(f"bootstrapping tiny-{spec.key(cfg.seed)} (SFT, {spec.sft.steps} steps, one thread) into {cfg.out} ...", flush=True)
    out = bootstrap(cfg.out, seed=cfg.seed, spec=spec, progress=cfg.progress)
    info = json.loads((out / MARKER_FILE).read_text())
    print(f"done in {info['seconds']} s, final SFT loss {info['final_loss']}", flush=True)
    try:
        difference = compare_with_shipped(out, spec, cfg.seed)
    except FileNotFoundError as missing:
        print(
            f"{missing}: to ship these weights, copy {out / WEIGHTS_FILE} to that folder as tiny-{spec.key(cfg.seed)}.safetensors "
            f"and {out / MARKER_FILE} beside it as tiny-{spec.key(cfg.seed)}.json"
        )
        return 0
    if difference is None:
        print("identical to the shipped weights, bit for bit")
        return 0
    print(f"differs from the shipped weights: {difference}")
    return 1 if cfg.check else 0
