"""Quick anytime-accuracy measurement of a model on the synthetic held-out set (self-contained).

One thinking per question is sampled up to the largest budget, cut at every budget with the exact
inserted text of SPEC §3, one summary is sampled per budget and graded (SPEC §4, integer answers).
This is the task's own check of a base model; the project's evaluation uses the rollout module.

    python -m anytime_reasoner.tasks.measure MODEL_DIR --n 200 --budgets 12:96:12 --temperature 0.6

Default base model (seed 0), 200 held-out questions, temperature 0.6, budgets 12…96:
0.19 0.07 0.15 0.27 0.34 0.44 0.54 0.58 (mean 0.32); the teacher it imitates is right 69% of the time.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from anytime_reasoner.tasks import synthetic
from anytime_reasoner.tasks.bootstrap import Segments, prompt_ids

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class AnytimeCurve:
    budgets: tuple[int, ...]
    accuracy: tuple[float, ...]  # per budget
    mean_accuracy: float  # anytime accuracy: mean over the budgets
    mean_thinking_tokens: float
    closed_rate: float  # thinkings that ended with </think> within the largest budget
    seconds: float
    thinking_tokens_per_second: float


def extract_answer(response: str) -> str | None:
    """Last ``\\boxed{}`` of the first paragraph that starts with ``**Final Answer**\\n``."""
    for paragraph in response.split("\n\n"):
        if paragraph.startswith("**Final Answer**\n"):
            found = _BOXED.findall(paragraph)
            return found[-1].strip() if found else None
    return None


def is_correct(response: str, answer: str) -> bool:
    """Correct and well-formed: one ``</think>`` and the boxed integer equals the answer."""
    if response.count(synthetic.THINK_END) != 1:
        return False
    got = extract_answer(response)
    return got is not None and got.lstrip("+").lstrip("0") == answer.lstrip("0")


def _generate(model, prefixes: list[list[int]], max_new: int, temperature: float, stop: list[int], pad: int) -> list[list[int]]:
    """Left-padded batch generation; each output is trimmed after its first stop token."""
    width = max(len(p) for p in prefixes)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prefixes])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes])
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if temperature > 0 else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=stop, pad_token_id=pad, **sampling
        )
    rows = []
    for row in out[:, width:].tolist():
        ends = [i for i, t in enumerate(row) if t in stop]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


def _summary_prefix(prompt: list[int], thinking: list[int], budget: int, seg: Segments) -> list[int] | None:
    """SPEC §3; ``None`` when the thinking ended in EOS before the budget (scores 0)."""
    closed = bool(thinking) and thinking[-1] == seg.think_end
    if closed and len(thinking) <= budget:
        return prompt + thinking + seg.delimiter
    if thinking and thinking[-1] == seg.eos and len(thinking) <= budget:
        return None
    return prompt + thinking[:budget] + seg.cut_marker + [seg.think_end] + seg.delimiter


def measure_anytime_accuracy(
    model_dir: str | Path,
    n: int = 200,
    budgets: Sequence[int] = (12, 24, 36, 48, 60, 72, 84, 96),
    temperature: float = 0.6,
    seed: int = 0,
    batch_size: int = 100,
    summary_max_tokens: int = 16,
    with_instruction: bool = True,
) -> AnytimeCurve:
    torch.manual_seed(seed)
    tokenizer: PreTrainedTokenizerFast = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    seg = Segments.of(tokenizer)
    pad = tokenizer.pad_token_id
    problems = synthetic.held_out(n, seed=seed)
    correct = [[0] * len(budgets) for _ in problems]
    lengths, closed = [], 0
    start = time.perf_counter()
    think_seconds = 0.0
    for lo in range(0, n, batch_size):
        chunk = problems[lo : lo + batch_size]
        prompts = [prompt_ids(tokenizer, p.prompt if with_instruction else p.question) for p in chunk]
        t0 = time.perf_counter()
        thinkings = _generate(model, prompts, max(budgets), temperature, [seg.think_end, seg.eos], pad)
        think_seconds += time.perf_counter() - t0
        lengths += [len(z) for z in thinkings]
        closed += sum(1 for z in thinkings if z and z[-1] == seg.think_end)
        jobs = [
            (i, j, prefix)
            for i, (prompt, z) in enumerate(zip(prompts, thinkings))
            for j, b in enumerate(budgets)
            if (prefix := _summary_prefix(prompt, z, b, seg)) is not None
        ]
        summaries = _generate(model, [p for *_, p in jobs], summary_max_tokens, temperature, [seg.eos], pad)
        for (i, j, prefix), summary in zip(jobs, summaries):
            response = tokenizer.decode(prefix[len(prompts[i]) :] + summary, skip_special_tokens=True)
            correct[lo + i][j] = int(is_correct(response, chunk[i].answer))
    accuracy = tuple(sum(row[j] for row in correct) / n for j in range(len(budgets)))
    return AnytimeCurve(
        budgets=tuple(budgets),
        accuracy=accuracy,
        mean_accuracy=sum(accuracy) / len(accuracy),
        mean_thinking_tokens=sum(lengths) / n,
        closed_rate=closed / n,
        seconds=time.perf_counter() - start,
        thinking_tokens_per_second=sum(lengths) / max(think_seconds, 1e-9),
    )


def teacher_accuracy(n: int = 2000, seed: int = 0, spec: synthetic.TaskSpec = synthetic.TaskSpec()) -> float:
    """Full-budget accuracy of the (slipping) teacher the base model imitates."""
    import random

    rng = random.Random(seed)
    problems = synthetic.held_out(n, seed=seed, spec=spec)
    return sum(p.solution(rng).answer == p.answer for p in problems) / n


def _grid(text: str) -> list[int]:
    if ":" in text:
        lo, hi, step = (int(x) for x in text.split(":"))
        return list(range(lo, hi + 1, step))
    return [int(x) for x in text.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--budgets", default="12:96:12")
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.6, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bare", action="store_true", help="prompt with the bare question (no instruction)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for temperature in args.temperature:
        curve = measure_anytime_accuracy(
            args.model_dir, args.n, _grid(args.budgets), temperature, args.seed, with_instruction=not args.bare
        )
        print(json.dumps({"temperature": temperature, **asdict(curve)}))


if __name__ == "__main__":
    main()
