"""Budget-controlled answers: the answer at each budget, all from ONE thinking (``anytime-reasoner ask``).

:func:`iter_answers_at_budgets` grows a single thinking budget by budget: it samples the thinking up
to b_1, forces a summary at that cut (docs/ALGORITHM.md §3 rule: cut marker + ``</think>`` + delimiter when cut
inside, only the delimiter when the thinking closed by itself), yields that answer, then *continues
the same thinking* from its b_1 tokens up to b_2, and so on. The answer at b_j is therefore the one
the evaluation would score at b_j, and it is available as soon as b_j tokens have been thought.
:func:`answers_at_budgets` collects them in a list.

Departures (deliberate): once the thinking has ended, later budgets share its prefix and reuse its
answer instead of sampling a fresh summary per budget (the evaluation samples one per budget;
here one question wants one answer). Each continuation re-encodes the thinking so far (the engine
protocol has no persistent state between calls): for b_1 < … < b_m that is at most m prefills of
≤ b_m tokens, small next to the b_m decoding steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from anytime_reasoner.algo.budgets import check_budgets
from anytime_reasoner.config import AskConfig
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.data.schema import INSTRUCTION
from anytime_reasoner.engine.base import SamplingParams
from anytime_reasoner.engine.hf import TransformersEngine
from anytime_reasoner.models.engines import load_for_inference
from anytime_reasoner.protocol import AnytimeProtocol
from anytime_reasoner.rewards.extract import extract_answer
from anytime_reasoner.rollout.anytime import cut_groups


@dataclass(frozen=True)
class BudgetAnswer:
    budget: int
    answer: str | None  # the \boxed{} content of the Final Answer paragraph; None if there is none
    summary: str  # the sampled summary text
    thinking_tokens: int  # thinking tokens kept before the summary
    thinking_done: bool  # the thinking had ended (think-end or EOS) at or before this budget


@dataclass(frozen=True)
class AskOptions:
    temperature: float = 0.6
    top_p: float = 1.0
    seed: int | None = None
    protocol: AnytimeProtocol = field(default_factory=AnytimeProtocol)  # think markers, inserted texts, summary cap
    instruction: str = INSTRUCTION  # appended to the question, as in training and evaluation
    eos_ids: tuple[int, ...] = ()  # the model's EOS ids beside the tokenizer's (its generation config)


def _engine(model: Any, pad_id: int) -> Any:
    """``model`` may already be a generation engine; else wrap the HF model."""
    if hasattr(model, "sample"):
        return model
    return TransformersEngine(model, pad_token_id=pad_id)


def _seed(options: AskOptions, step: int) -> int | None:
    return None if options.seed is None else options.seed + step


def iter_answers_at_budgets(
    model: Any, tokenizer: Any, question: str, budgets: Sequence[int], options: AskOptions | None = None
) -> Iterator[BudgetAnswer]:
    """Yield one :class:`BudgetAnswer` per budget (increasing), as soon as its budget is reached."""
    opts = options or AskOptions()
    protocol = opts.protocol
    budgets = check_budgets(list(budgets), "budgets")
    codec = TokenizerCodec.for_protocol(tokenizer, protocol, opts.eos_ids)
    engine = _engine(model, codec.pad_id)
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": question + opts.instruction}], protocol.think_start)
    inserted = protocol.inserted_ids(codec)
    thinking: list[int] = []
    ended = False
    previous: tuple[tuple[int, bool], BudgetAnswer] | None = None
    for j, budget in enumerate(budgets):
        if not ended and len(thinking) < budget:
            params = SamplingParams(
                budget - len(thinking), opts.temperature, opts.top_p, (codec.think_end_id, *codec.eos_ids), _seed(opts, 2 * j)
            )
            step = engine.sample([prompt + thinking], 1, params)[0][0]
            thinking += list(step.token_ids)
            ended = step.finish_reason == "stop"
        closed = bool(thinking) and thinking[-1] == codec.think_end_id
        group = cut_groups(len(thinking), closed, [budget])[0]
        key = (group.cut, group.natural)
        if previous is not None and previous[0] == key:  # same prefix as the last budget: same answer
            yield BudgetAnswer(budget, previous[1].answer, previous[1].summary, group.cut, ended)
            continue
        forced = list(thinking[: group.cut]) + list(inserted.of(group.natural))
        params = SamplingParams(protocol.summary_max_tokens, opts.temperature, opts.top_p, codec.eos_ids, _seed(opts, 2 * j + 1))
        sampled = list(engine.sample([prompt + forced], 1, params)[0][0].token_ids)
        summary = codec.decode(sampled[:-1] if sampled and sampled[-1] == codec.eos_id else sampled)
        answer = extract_answer(codec.decode(forced) + summary, protocol.think_end, protocol.answer_marker)
        result = BudgetAnswer(budget, answer, summary, group.cut, ended and len(thinking) <= budget)
        previous = (key, result)
        yield result


def answers_at_budgets(
    model: Any, tokenizer: Any, question: str, budgets: Sequence[int], options: AskOptions | None = None
) -> list[BudgetAnswer]:
    """The answer at every budget, from one thinking (see :func:`iter_answers_at_budgets`)."""
    return list(iter_answers_at_budgets(model, tokenizer, question, budgets, options))


def run_ask(config: AskConfig) -> int:
    """``anytime-reasoner ask "QUESTION" model=M budgets=…``: print each answer as its budget is reached."""
    protocol = config.protocol()
    loaded = load_for_inference(config.model, config.tokenizer, config.dtype, config.device, protocol, config.engine)
    options = AskOptions(
        temperature=config.temperature, top_p=config.top_p, seed=config.seed, protocol=protocol, eos_ids=loaded.codec.eos_ids
    )
    width = len(str(max(config.budgets)))
    for item in iter_answers_at_budgets(loaded.engine, loaded.tokenizer, config.question, config.budgets, options):
        state = "thinking finished" if item.thinking_done else "cut"
        shown = item.answer if item.answer is not None else "(no boxed answer)"
        print(f"budget {item.budget:>{width}}: {shown}    [{item.thinking_tokens} thinking tokens, {state}]", flush=True)
        if config.show_summary:
            print("    " + item.summary.strip().replace("\n", "\n    "), flush=True)
    return 0
