"""Helpers for the evaluation tests: an exact-match verifier and a scripted anytime world.

The scripted world (byte-level tokenizer of the root conftest: byte b is token b, ``</think>`` 259,
``<eos>`` 257) has two problems, Q1 (answer 7) and Q2 (answer 3), and two samples each:

    thinking (before the 12-token cap)        tokens  ends         insight "!" at token
    Q1 s0  "ab!defgh" + </think>               9       closed       3
    Q1 s1  "abcdef!hijklmnop" → cut at 12       12      cap          7
    Q2 s0  "abcdefghijk!mnop" → cut at 12       12      cap          12
    Q2 s1  "ab!" + <eos>                        4       EOS (reward 0 by the format rule)

A summary states the right answer iff the kept thinking contains "!", else "0".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from anytime_reasoner.data.schema import Example
from anytime_reasoner.engine.scripted import ScriptedEngine
from anytime_reasoner.rewards.base import Grade

EOS, THINK_END = 257, 259
THINKINGS = {
    ("Q1", 0): list(b"ab!defgh") + [THINK_END],
    ("Q1", 1): list(b"abcdef!hijklmnop"),
    ("Q2", 0): list(b"abcdefghijk!mnop"),
    ("Q2", 1): list(b"ab!") + [EOS],
}
ANSWERS = {"Q1": "7", "Q2": "3"}


class ExactVerifier:
    """Exact string match of the last ``\\boxed{}`` after ``**Final Answer**``; one ``</think>``."""

    def grade(self, responses: Sequence[str], ground_truths: Sequence[Sequence[str]]) -> list[Grade]:
        out = []
        for response, truths in zip(responses, ground_truths, strict=False):
            summary = response.split("**Final Answer**\n", 1)[-1]
            found = re.findall(r"\\boxed\{([^{}]*)\}", summary)
            answer = found[-1] if found else None
            out.append(Grade(correct=answer in truths, well_formed=response.count("</think>") == 1, extracted=answer))
        return out


def scripted_engine(tokenizer) -> ScriptedEngine:
    """Thinkings from THINKINGS; summaries ``\\boxed{answer}`` + eos when the kept thinking has '!'."""

    def script(prefix, index):
        text = tokenizer.decode(list(prefix), skip_special_tokens=False)
        question = "Q1" if "Q1" in text else "Q2"
        if text.endswith("<think>\n"):
            return THINKINGS[(question, index)]
        kept = text.split("<think>\n", 1)[1]
        answer = ANSWERS[question] if "!" in kept else "0"
        return list(f"\\boxed{{{answer}}}".encode()) + [EOS]

    return ScriptedEngine(script)


def scripted_examples() -> list[Example]:
    return [Example.from_problem(q, "toy", f"What is {q}?", (a,)) for q, a in ANSWERS.items()]
