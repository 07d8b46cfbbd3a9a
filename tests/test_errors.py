"""Every bad input of docs/ERRORS.md, through the real entry point (``anytime_reasoner.cli.main``).

The table in docs/ERRORS.md is the contract: each row names a case here by its test id, its exit
status and the exact line the user sees (``<tmp>`` stands for the test's folder, ``<model>`` for the
saved tiny model). Each case writes its files, runs the command and compares:

- ``error`` rows: exactly one stderr line, no traceback, equal to the table's message;
- ``late`` rows: the same, except that the line may follow the model's loading output (a check
  that today runs after the weights load, see docs/ERRORS.md);
- ``report`` rows: the command succeeds and its data report (stdout) equals the table's message:
  a bad row is counted and dropped, never trained on silently;
- ``rule`` rows: no error, the documented rule is checked instead.

``test_doc_and_cases_agree`` parses the table, so the doc and the cases cannot drift apart. Every
case is fast: it fails (or is handled) before anything generates or trains.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from anytime_reasoner.cli import main
from tests.conftest import make_tiny_qwen2, make_tokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md"


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    exit: int | None
    message: str | None  # None: a rule row (no message) or a placeholder


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def read_table(path: Path = DOC) -> dict[str, Row]:
    """test id → row, from the first table of ``path`` with a ``test`` column."""
    rows: dict[str, Row] = {}
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            continue
        cells = _cells(line)
        if header is None:
            if "test" in cells:
                header = cells
            continue
        if set(line) <= set("|-: "):
            continue
        row = dict(zip(header, cells, strict=True))
        test_id = row["test"].strip("`")
        if test_id == "TBD":
            continue
        message = row["message"]
        text = message[1:-1] if message.startswith("`") and message.endswith("`") else None
        exit_code = int(row["exit"]) if row["exit"].isdigit() else None
        assert test_id not in rows, f"docs/ERRORS.md: test id {test_id} appears twice"
        rows[test_id] = Row(exit_code, text)
    return rows


# ------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    tmp: Path
    models: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def model(self) -> Path:
        return self.models / "model"

    def file(self, name: str, content: str | bytes | object) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
        return path

    def good(self) -> Path:
        return self.file("good.json", [{"problem": "What is 1+1?", "answer": "2"}])

    def train(self, *args: str) -> list[str]:
        return ["train", f"model.path={self.model}", "model.device=cpu", f"trainer.out={self.tmp / 'run'}", *args]

    def eval(self, *args: str) -> list[str]:
        return ["eval", f"model={self.model}", f"data={self.good()}", f"out={self.tmp / 'eval'}", "budgets=4,8", *args]

    def data(self, rows: object, *args: str, name: str = "problems.json") -> list[str]:
        return ["data", str(self.file(name, rows)), f"out={self.tmp / 'sets'}", *args]

    def no_cuda(self) -> None:
        import torch

        self.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def read_only(self, name: str) -> Path:
        """A folder this process cannot write into (as root, ``os.access`` is told so: root may write anywhere)."""
        folder = self.tmp / name
        folder.mkdir()
        folder.chmod(0o555)
        if os.geteuid() == 0:
            real = os.access
            self.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real(p, mode, **kw))
        return folder


@dataclass(frozen=True)
class Case:
    argv: Callable[[Ctx], list[str]] | None = None  # writes the case's files, returns the command line
    kind: str = "error"  # error | late | report | rule
    rule: Callable[[Ctx], None] | None = None


def _no_pyarrow(c: Ctx) -> list[str]:
    c.monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed (import fails, find_spec is None)
    c.monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    return ["data", str(c.file("rows.parquet", b"PAR1")), f"out={c.tmp / 'sets'}"]


def _no_vllm(c: Ctx) -> list[str]:
    c.monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed (find_spec is None)
    return c.train("engine.backend=vllm", "rollout.max_budget=16")


def _vllm_head_size(c: Ctx) -> list[str]:
    real = importlib.util.find_spec
    c.monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    return c.train("engine.backend=vllm", "rollout.max_budget=16")


def _folder_named_json(c: Ctx) -> list[str]:
    (c.tmp / "rows.json").mkdir()
    return ["data", str(c.tmp / "rows.json"), f"out={c.tmp / 'sets'}"]


def _train_no_cuda(c: Ctx) -> list[str]:
    c.no_cuda()
    return c.train("model.device=cuda")


def _eval_no_cuda(c: Ctx) -> list[str]:
    c.no_cuda()
    return c.eval("device=cuda")


def _rule_no_chat_template(c: Ctx) -> None:
    from transformers import AutoTokenizer

    from anytime_reasoner.data.prompts import render_prompt
    from anytime_reasoner.data.schema import INSTRUCTION, Example

    tok = make_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(c.tmp / "plain")
    loaded = AutoTokenizer.from_pretrained(c.tmp / "plain")
    assert not getattr(loaded, "chat_template", None)
    messages = Example.from_problem("i", "s", "Q", ("1",)).messages
    assert render_prompt(loaded, messages) == f"User: Q{INSTRUCTION}\nAssistant: <think>\n"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["data", str(c.good()), f"tokenizer={c.tmp / 'plain'}", f"out={c.tmp / 'sets'}"]) == 0
    assert "good: 1 read, 1 kept" in out.getvalue()


def _rule_mini_batches(c: Ctx) -> None:
    import torch

    from anytime_reasoner.config import TrainConfig, build_config
    from anytime_reasoner.train.update import question_mini_batches

    cfg = build_config(TrainConfig, overrides=["trainer.batch_size=5", "ppo.ppo_mini_batch_size=2"])
    assert (cfg.trainer.batch_size, cfg.ppo.ppo_mini_batch_size) == (5, 2)
    # 5 questions in mini-batches of 2: the last one is shorter
    assert [b.tolist() for b in question_mini_batches(torch.arange(5), 2)] == [[0, 1], [2, 3], [4]]


def _rule_mini_batch_too_large(c: Ctx) -> None:
    import torch

    from anytime_reasoner.config import TrainConfig, build_config
    from anytime_reasoner.train.update import question_mini_batches

    cfg = build_config(TrainConfig, overrides=["trainer.batch_size=5", "ppo.ppo_mini_batch_size=32"])
    n_mini = -(-cfg.trainer.batch_size // cfg.ppo.ppo_mini_batch_size)  # as train/update.py: ceil
    assert n_mini == 1
    assert [b.tolist() for b in question_mini_batches(torch.arange(5), 32, n_mini)] == [[0, 1, 2, 3, 4]]


def _grade(c: Ctx, text: str) -> list[str]:
    return ["grade", f"input={c.file('in.jsonl', text)}", f"output={c.tmp / 'out.jsonl'}", "workers=1", "progress=false"]


def _schema_row(id: str, question: str) -> dict[str, object]:
    return {"id": id, "data_source": "set", "prompt": [{"role": "user", "content": question}], "ground_truths": ["1"]}


RESUME_ARGS = ("rollout.max_budget=16",)


def _resume_from(c: Ctx, *, train_state: bool, saved: list[str]) -> list[str]:
    """``trainer.out`` holding a checkpoint whose trainer state records the config of ``c.train(*saved)``."""
    from anytime_reasoner.config import TrainConfig, build_config, dump

    argv = c.train(*RESUME_ARGS)
    config = dump(build_config(TrainConfig, overrides=[*argv[1:], *saved]))
    step = c.tmp / "run" / "checkpoints" / "step_1"
    c.file("run/checkpoints/step_1/trainer_state.json", {"step": 1, "seed": 0, "config": config})
    if train_state:
        c.file("run/checkpoints/step_1/train_state/.metadata", b"")
    assert step.is_dir()
    return argv


def _rule_half_written_checkpoint(c: Ctx) -> None:
    """A checkpoint folder without its trainer state (written last) is not resumed from."""
    from anytime_reasoner.train.checkpoint import latest_checkpoint

    c.file("run/checkpoints/step_1/trainer_state.json", {"step": 1, "seed": 0})
    c.file("run/checkpoints/step_2/model.safetensors", b"")  # killed before its trainer state was written
    (c.tmp / "run" / "checkpoints" / ".tmp_step_3").mkdir()
    latest = latest_checkpoint(c.tmp / "run")
    assert latest is not None and latest.name == "step_1"


CASES: dict[str, Case] = {
    # -- command line and configuration (exit 2)
    "cli-unknown-subcommand": Case(lambda c: ["trian"]),
    "cli-unknown-preset": Case(lambda c: ["train", "ar-unifrom"]),
    "cli-unknown-option": Case(lambda c: ["train", "--configg", "x.yaml"]),
    "cli-key-without-value": Case(lambda c: ["train", "rollout.n"]),
    "config-unknown-key": Case(lambda c: ["train", "rollout.n_sumary=2"]),
    "config-key-in-wrong-section": Case(lambda c: ["train", "trainer.lr=1e-5"]),
    "config-unknown-section": Case(lambda c: ["train", "rollot.n=8"]),
    "config-unknown-eval-key": Case(lambda c: ["eval", "model=m", "sampels=2"]),
    "config-file-missing": Case(lambda c: ["train", "--config", str(c.tmp / "missing.yaml")]),
    "config-file-bad-yaml": Case(lambda c: ["train", "--config", str(c.file("bad.yaml", "rollout: [1, 2\n"))]),
    "config-file-not-mapping": Case(lambda c: ["train", "--config", str(c.file("list.yaml", "- 1\n- 2\n"))]),
    "config-n-zero": Case(lambda c: ["train", "rollout.n=0"]),
    "config-clip-eps-range": Case(lambda c: ["train", "ppo.clip_eps=1.5"]),
    "config-val-every-negative": Case(lambda c: ["train", "trainer.val_every=-1"]),
    "config-steps-not-integer": Case(lambda c: ["train", "trainer.steps=abc"]),
    "config-bad-choice": Case(lambda c: ["train", "rollout.summary_method=ppo"]),
    "config-float16-training": Case(lambda c: ["train", "model.dtype=float16"]),
    "config-device-choice": Case(lambda c: ["train", "model.device=gpu"]),
    "budgets-not-increasing": Case(lambda c: ["train", "rollout.budgets=300,200"]),
    "budgets-empty": Case(lambda c: ["train", "rollout.budgets=[]"]),
    "budgets-not-a-grid": Case(lambda c: ["train", "rollout.budgets=1:x:2"]),
    "max-budget-below-support": Case(lambda c: ["train", "rollout.max_budget=2"]),
    "eval-budgets-empty": Case(lambda c: ["eval", "model=m", "budgets="]),
    "eval-budgets-not-increasing": Case(lambda c: ["eval", "model=m", "budgets=500,250"]),
    "prior-weights-count": Case(lambda c: ["train", "rollout.budget_probs=1,2"]),
    "prior-negative": Case(lambda c: ["train", "rollout.budget_probs=1,-1,1,1"]),
    "prior-all-zero": Case(lambda c: ["train", "rollout.budget_probs=0,0,0,0"]),
    "prior-unknown": Case(lambda c: ["train", "rollout.budget_probs=cubic"]),
    "eval-prior-weights-count": Case(lambda c: ["eval", "model=m", "budgets=100,200", "prior=1,2,3"]),
    "compare-unknown-preset": Case(lambda c: ["compare", "presets=grpo,ar-unifrom"]),
    "length-l1-without-prompt-budget": Case(lambda c: ["train", "length.reward=l1-exact"]),
    "length-cap-schedule-start": Case(lambda c: ["train", "length.cap_schedule=2:0.5"]),
    "length-cap-schedule-collides": Case(lambda c: ["train", "rollout.max_budget=4", "length.cap_schedule=1:0.3"]),
    "eval-budget-prompt-without-n": Case(lambda c: ["eval", "model=m", "mode=prompt-budget", "budget_prompt=Think briefly."]),
    "async-inline-placement": Case(lambda c: ["train", "trainer.async_level=1", "trainer.rollout_placement=inline"]),
    "decoupled-with-tis": Case(lambda c: ["train", "ppo.decoupled=true", "ppo.tis_cap=2"]),
    "one-pass-choice": Case(lambda c: ["train", "rollout.one_pass=maybe"]),
    "ask-empty-question": Case(lambda c: ["ask", "", "model=m"]),
    "ask-blank-question": Case(lambda c: ["ask", "   ", "model=m"]),
    # -- data sources (exit 1)
    "data-file-missing": Case(lambda c: ["data", str(c.tmp / "nope.json"), f"out={c.tmp / 'sets'}"]),
    "data-file-type": Case(lambda c: ["data", str(c.file("rows.csv", "problem,answer\n")), f"out={c.tmp / 'sets'}"]),
    "data-folder-named-json": Case(_folder_named_json),
    "data-not-utf8": Case(lambda c: c.data(b'[{"problem": "caf\xe9", "answer": "1"}]')),
    "data-not-json": Case(lambda c: c.data("hello")),
    "data-json-not-a-list": Case(lambda c: c.data({"rows": []})),
    "data-jsonl-bad-line": Case(lambda c: c.data('{"problem": "p", "answer": "1"}\n{"problem": \n', name="problems.jsonl")),
    "data-parquet-without-pyarrow": Case(_no_pyarrow),
    "data-no-data-dir": Case(lambda c: ["data", "aime", f"out={c.tmp / 'sets'}"]),
    "data-dir-not-a-folder": Case(lambda c: ["data", "aime", f"data_dir={c.tmp / 'nodir'}", f"out={c.tmp / 'sets'}"]),
    "data-name-not-in-data-dir": Case(lambda c: ["data", "aime", f"data_dir={c.tmp}", f"out={c.tmp / 'sets'}"]),
    "data-unknown-name": Case(lambda c: ["data", "aime24", f"out={c.tmp / 'sets'}"]),
    "train-data-unknown-name": Case(lambda c: c.train("data.train=aime24")),
    "eval-unknown-benchmark": Case(lambda c: [*c.eval(), "data=aime24"]),
    # -- data rows: counted and dropped, the report says so (exit 0)
    "row-missing-problem": Case(lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"answer": "3"}]), "report"),
    "row-missing-answer": Case(lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?"}]), "report"),
    "row-blank-problem": Case(
        lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"problem": " \n ", "answer": "3"}]), "report"
    ),
    "row-blank-answer": Case(
        lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "  "}]), "report"
    ),
    "row-problem-not-a-string": Case(
        lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"problem": 17, "answer": "3"}]), "report"
    ),
    "row-answer-wrong-type": Case(
        lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": {"value": 4}}]), "report"
    ),
    "row-not-an-object": Case(lambda c: c.data([{"problem": "1+1?", "answer": "2"}, "2+2=4"]), "report"),
    "row-duplicate-problem": Case(
        lambda c: c.data([{"problem": "What is 1+1?", "answer": "2"}, {"problem": "What is  1+1? ", "answer": "2"}]), "report"
    ),
    "row-duplicate-id": Case(lambda c: c.data([_schema_row("a", "1+1?"), _schema_row("a", "2+2?")]), "report"),
    "row-prompt-too-long": Case(
        lambda c: c.data(
            [{"problem": "short", "answer": "1"}, {"problem": "x" * 200, "answer": "2"}],
            f"tokenizer={c.model}",
            "max_prompt_tokens=100",
        ),
        "report",
    ),
    "row-strict": Case(lambda c: c.data([{"problem": "1+1?", "answer": "2"}, {"answer": "3"}], "strict=true")),
    "data-no-usable-rows": Case(lambda c: c.data([{"problem": "  ", "answer": "1"}, {"answer": "2"}])),
    "eval-no-usable-rows": Case(lambda c: [*c.eval(), f"data={c.file('bad.json', [{'answer': '2'}])}"]),
    "train-no-usable-rows": Case(
        lambda c: c.train(f"data.train={c.file('bad.json', [{'answer': '2'}])}", "rollout.max_budget=16"), "late"
    ),
    # -- model and tokenizer (exit 1), before any weights load
    "train-vllm-not-installed": Case(_no_vllm),
    "train-vllm-head-size-on-cpu": Case(_vllm_head_size),
    "train-model-not-causal-lm": Case(lambda c: [*c.train(), f"model.path={c.models / 'bert'}"]),
    "train-model-empty-folder": Case(lambda c: [*c.train(), f"model.path={c.models / 'empty'}"]),
    "train-model-missing": Case(lambda c: [*c.train(), "model.path=/nonexistent/model"]),
    "eval-model-not-causal-lm": Case(lambda c: [*c.eval(), f"model={c.models / 'bert'}"]),
    "train-think-token-not-single": Case(lambda c: c.train("model.think_end=</thinking>", "rollout.max_budget=16")),
    "eval-think-token-not-single": Case(lambda c: c.eval("think_end=</thinking>")),
    "tokenizer-without-chat-template": Case(kind="rule", rule=_rule_no_chat_template),
    "train-context-too-short": Case(lambda c: c.train("rollout.max_budget=8000")),
    "train-context-with-data": Case(lambda c: c.train(f"data.train={c.good()}", "rollout.max_budget=4000")),
    "eval-context-too-short": Case(lambda c: c.eval("budgets=1000:8000:1000")),
    "ask-context-too-short": Case(lambda c: ["ask", "What is 2+3?", f"model={c.model}", "budgets=1000,9000"]),
    "train-cuda-missing": Case(_train_no_cuda),
    "eval-cuda-missing": Case(_eval_no_cuda),
    # -- outputs (exit 1), before any work
    "train-out-under-a-file": Case(lambda c: [*c.train(), f"trainer.out={c.file('taken', 'x') / 'run'}"]),
    "train-out-read-only": Case(lambda c: [*c.train(), f"trainer.out={c.read_only('locked') / 'run'}"]),
    "eval-out-read-only": Case(lambda c: [*c.eval(), f"out={c.read_only('locked') / 'eval'}"]),
    "bootstrap-out-holds-a-model": Case(lambda c: ["bootstrap", f"out={c.file('built/model.safetensors', b'x').parent}"]),
    "data-out-is-a-file": Case(lambda c: ["data", str(c.good()), f"out={c.file('taken', 'x')}"]),
    "grade-output-under-a-file": Case(
        lambda c: [*_grade(c, '{"response": "1", "ground_truth": "1"}\n'), f"output={c.file('taken', 'x') / 'o.jsonl'}"]
    ),
    # -- grade input (exit 1)
    "grade-input-missing": Case(lambda c: ["grade", f"input={c.tmp / 'nope.jsonl'}", f"output={c.tmp / 'out.jsonl'}"]),
    "grade-no-response": Case(lambda c: _grade(c, '{"ground_truth": "2"}\n')),
    "grade-no-ground-truth": Case(lambda c: _grade(c, '{"response": "\\\\boxed{2}"}\n')),
    "grade-line-not-json": Case(lambda c: _grade(c, '{"response": "1", "ground_truth": "1"}\nnot json\n')),
    "resume-config-changed": Case(lambda c: _resume_from(c, train_state=True, saved=["ppo.lr=1e-4"])),
    "resume-no-train-state": Case(lambda c: _resume_from(c, train_state=False, saved=[])),
    # -- rules: accepted, and what happens
    "resume-half-written-checkpoint": Case(kind="rule", rule=_rule_half_written_checkpoint),
    "mini-batch-not-a-divisor": Case(kind="rule", rule=_rule_mini_batches),
    "mini-batch-larger-than-batch": Case(kind="rule", rule=_rule_mini_batch_too_large),
}


# ------------------------------------------------------------------------------------------
# Running a case
# ------------------------------------------------------------------------------------------


def normalize(text: str, ctx: Ctx) -> str:
    return text.replace(str(ctx.models), "<models>").replace(str(ctx.tmp), "<tmp>").replace("<models>/model", "<model>")


def run_case(case: Case, ctx: Ctx) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the case's command, paths replaced by placeholders."""
    assert case.argv is not None
    argv = case.argv(ctx)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, normalize(out.getvalue(), ctx), normalize(err.getvalue(), ctx)


def observed(case: Case, ctx: Ctx) -> tuple[int, str]:
    """(exit status, the line the table holds) of an error / late / report case."""
    code, out, err = run_case(case, ctx)
    assert "Traceback" not in err, err
    if case.kind == "report":
        assert err.strip() == "", err
        lines = [line for line in out.splitlines() if " read, " in line]
        assert len(lines) == 1, out
        return code, lines[0]
    lines = [line for line in err.splitlines() if line.strip()]
    if case.kind == "error":
        assert len(lines) == 1, err
    return code, lines[-1] if lines else ""


def make_models(root: Path) -> Path:
    """``model`` (a saved tiny Qwen2 + tokenizer, 4096 positions), ``bert`` (a BERT config), ``empty``."""
    make_tiny_qwen2(seed=0).save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    (root / "bert").mkdir()
    bert = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32, "num_hidden_layers": 1}
    (root / "bert" / "config.json").write_text(json.dumps({**bert, "num_attention_heads": 2, "vocab_size": 100}))
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def ctx(tmp_path, models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANYTIME_REASONER_DATA", raising=False)
    return Ctx(tmp_path, models, monkeypatch)


TABLE = read_table()


@pytest.mark.parametrize("test_id", list(CASES))
def test_bad_input(test_id, ctx):
    case = CASES[test_id]
    row = TABLE.get(test_id)
    assert row is not None, f"docs/ERRORS.md has no row for {test_id}"
    if case.kind == "rule":
        assert case.rule is not None
        case.rule(ctx)
        return
    code, line = observed(case, ctx)
    assert (code, line) == (row.exit, row.message)


def test_doc_and_cases_agree():
    assert set(TABLE) == set(CASES), {"doc only": set(TABLE) - set(CASES), "cases only": set(CASES) - set(TABLE)}
    for test_id, row in TABLE.items():
        if CASES[test_id].kind == "rule":
            assert row.message is None, f"{test_id}: a rule row has no message"
        else:
            assert row.message and row.exit is not None, f"{test_id}: an exit status and a `message` are needed"
    assert len(TABLE) >= 32
