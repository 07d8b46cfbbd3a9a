"""Budget-controlled answers: one thinking grown budget by budget, one answer per budget.

Scripted thinking (byte tokens, ``</think>`` = 259): "abcdef!hij" + </think> = 11 tokens; the summary
answers 7 when the kept thinking holds "!", else 0. Budgets (4, 8, 16, 32):

    b=4:  thinks "abcd" (cap)            cut 4, forced   → 0
    b=8:  continues "ef!h" (cap)         cut 8, forced   → 7
    b=16: continues "ij</think>" (stop)  11, closed      → 7, thinking done
    b=32: same prefix as b=16            reused, no engine call → 7
"""

from __future__ import annotations

from anytime_reasoner.cli import main
from anytime_reasoner.engine.scripted import ScriptedEngine
from anytime_reasoner.eval.ask import AskOptions, answers_at_budgets, iter_answers_at_budgets
from anytime_reasoner.protocol import AnytimeProtocol

EOS, THINK, THINK_END = 257, 258, 259
FULL = list(b"abcdef!hij") + [THINK_END]


def engine_for(tokenizer) -> ScriptedEngine:
    def script(prefix, index):
        text = tokenizer.decode(list(prefix), skip_special_tokens=False)
        start = list(prefix).index(THINK) + 2  # after "<think>\n"
        if text.endswith("**Final Answer**\n"):
            answer = "7" if "!" in text.split("<think>\n", 1)[1] else "0"
            return list(f"\\boxed{{{answer}}}".encode()) + [EOS]
        return FULL[len(prefix) - start :]

    return ScriptedEngine(script)


def test_answers_per_budget_from_one_thinking(tiny_tokenizer):
    engine = engine_for(tiny_tokenizer)
    got = answers_at_budgets(
        engine, tiny_tokenizer, "Q?", [4, 8, 16, 32], AskOptions(protocol=AnytimeProtocol(summary_max_tokens=16))
    )
    assert [a.budget for a in got] == [4, 8, 16, 32]
    assert [a.answer for a in got] == ["0", "7", "7", "7"]
    assert [a.thinking_tokens for a in got] == [4, 8, 11, 11]
    assert [a.thinking_done for a in got] == [False, False, True, True]
    # 3 thinking steps + 3 summaries; the thinking steps continue one thinking: prompt, +4, +8 tokens
    thinking_calls = [c for c in engine.calls if c.params.stop_token_ids != (EOS,)]
    assert len(engine.calls) == 6 and [c.params.max_new_tokens for c in thinking_calls] == [4, 4, 8]
    p = thinking_calls[0].prefix_lengths[0]
    assert [c.prefix_lengths[0] for c in thinking_calls] == [p, p + 4, p + 8]


def test_streams_each_answer_when_its_budget_is_reached(tiny_tokenizer):
    engine = engine_for(tiny_tokenizer)
    stream = iter_answers_at_budgets(
        engine, tiny_tokenizer, "Q?", [4, 8], AskOptions(protocol=AnytimeProtocol(summary_max_tokens=16))
    )
    first = next(stream)
    assert (first.budget, first.answer, len(engine.calls)) == (4, "0", 2)  # nothing beyond b=4 sampled yet
    assert next(stream).answer == "7"


def test_ask_cli_with_a_tiny_model(tmp_path, tiny_model, tiny_tokenizer, capsys):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    code = main(["ask", "What is 2+3?", f"model={tmp_path}", "budgets=4,8", "summary_max_tokens=4", "device=cpu"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("budget")]
    assert [line.split(":")[0] for line in lines] == ["budget 4", "budget 8"]  # one answer line per budget
