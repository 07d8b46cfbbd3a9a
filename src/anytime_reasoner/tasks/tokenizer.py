"""A small byte-level BPE tokenizer for the tiny default model, built locally (no downloads).

* Byte-level: every string (any Unicode, real math problems, LaTeX) encodes and decodes exactly.
* Digits are always single tokens (pre-split before BPE), which makes arithmetic on numbers local.
* A small vocabulary (512 by default): 256 byte symbols, 5 added tokens, and merges learned on the
  synthetic task's text plus a little generic math English, so task text is short in tokens.
* Added tokens, each a single id: ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos),
  ``<think>`` and ``</think>``. The think tokens are *not* "special" in the Hugging Face sense (like
  Qwen3's), so ``decode(..., skip_special_tokens=True)`` keeps them and a grader can count them.
* A chat template with user/assistant roles whose generation prompt ends with ``<think>\\n``.

Saved and loaded as a ``transformers.PreTrainedTokenizerFast`` (``save_pretrained`` /
``AutoTokenizer.from_pretrained``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from anytime_reasoner.tasks import synthetic

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
THINK_TOKENS = (synthetic.THINK_START, synthetic.THINK_END)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n<think>\n' }}{%- endif -%}"
)

_GENERIC_TEXT = (
    "Let x be a real number such that x^2 + 3x - 4 = 0. Find the sum of all possible values of x.\n"
    "We compute \\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}, so the answer is \\boxed{5}.\n"
    "The probability that the number is even is $\\dfrac{3}{7}$ and the area of the triangle is "
    "\\sqrt{3}. Therefore the final answer is \\boxed{\\frac{\\pi}{4}}.\n"
    "How many positive integers n less than 100 satisfy the condition? Wait, let me check again.\n"
)


@dataclass(frozen=True)
class TokenizerSpec:
    vocab_size: int = 512
    corpus_problems: int = 400
    seed: int = 0


def _corpus(spec: TokenizerSpec) -> Iterator[str]:
    rng = random.Random(f"tokenizer-{spec.seed}")
    stream = synthetic.train_stream(spec.seed)
    for _ in range(spec.corpus_problems):
        problem = next(stream)
        solution = problem.solution(rng)
        yield f"{IM_START}user\n{problem.prompt}{IM_END}\n{IM_START}assistant\n{solution.text}{IM_END}"
        yield problem.cut_summary(solution.thinking[: len(solution.thinking) // 2], rng).text
    for _ in range(20):
        yield _GENERIC_TEXT


def _raw_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS + THINK_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def build_tokenizer(spec: TokenizerSpec = TokenizerSpec()) -> PreTrainedTokenizerFast:
    """Train the BPE merges on the synthetic corpus and wrap it for transformers."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_raw_tokenizer(spec),
        eos_token=IM_END,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | Path) -> Path:
    path = Path(path)
    tokenizer.save_pretrained(str(path))
    return path


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path))
