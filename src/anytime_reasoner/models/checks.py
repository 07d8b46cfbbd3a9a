"""Checks of a model that run before its weights load (docs/ERRORS.md).

Each raises :class:`~anytime_reasoner.errors.UserError` with one line naming the key and what is
allowed. Nothing here loads model weights: the model checks read ``config.json`` only
(``AutoConfig``), and the context check counts tokens with an already loaded tokenizer.

- :func:`load_model_config` / :func:`check_causal_lm`: the model is a causal LM (an empty folder or
  a BERT checkpoint is refused by name);
- :func:`check_context`: the longest sequence a run builds (prompt + largest budget + inserted
  text + summary) fits the model's ``max_position_embeddings``.

The commands' preflight checks (``train/preflight.py``, ``eval/preflight.py``, …) call these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anytime_reasoner.config import AskConfig, EvalConfig, TrainConfig
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.data.schema import Example
from anytime_reasoner.errors import UserError, first_line
from anytime_reasoner.tasks.synthetic import Problem, TaskSpec

# attributes that hold a model's context length, most common first (GPT-2: n_positions)
CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


# --------------------------------------------------------------------------------------------
# Model config (config.json only, no weights)
# --------------------------------------------------------------------------------------------


def load_model_config(path: str, key: str = "model.path") -> Any:
    """The model's ``AutoConfig`` (reads ``config.json`` only), checked to be a causal LM."""
    local = Path(path).expanduser()
    if local.is_file():
        raise UserError(f"{key}: {path} is a file; allowed: a model folder (config.json + weights) or a Hugging Face model name")
    if local.is_dir() and not (local / "config.json").is_file():
        raise UserError(
            f"{key}: {path} has no config.json; allowed: a folder written by save_pretrained "
            "(config.json + weights + tokenizer) or a Hugging Face model name"
        )
    if not local.exists() and path.startswith(("/", "./", "../", "~")):
        raise UserError(f"{key}: {path} does not exist; allowed: a model folder or a Hugging Face model name (owner/name)")
    from transformers import AutoConfig  # heavy: transformers loads only once a model is checked

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"{key}: cannot read the model config of {path!r} ({type(err).__name__}: {first_line(err)})") from None
    check_causal_lm(config, path, key)
    return config


def check_causal_lm(config: Any, path: str, key: str = "model.path") -> None:
    """Refuse a config that ``AutoModelForCausalLM`` would not load as a decoder-only LM: a model
    type without a causal-LM class (T5, ...), or a checkpoint whose ``architectures`` name another head
    (``BertForMaskedLM``: BERT has a causal-LM class, but its checkpoints are not one)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # heavy: transformers

    model_type = getattr(config, "model_type", "") or "unknown"
    names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    archs = list(getattr(config, "architectures", None) or [])
    known = set([names] if isinstance(names, str) else (names or ()))
    causal = names is not None and not getattr(config, "is_encoder_decoder", False)
    if causal and archs:
        causal = any(a in known or a.endswith(CAUSAL_SUFFIXES) for a in archs)
    if not causal:
        shown = ", ".join(archs) if archs else "no causal-LM class"
        raise UserError(
            f"{key}: {path} is a {model_type} model ({shown}), not a causal LM; "
            "allowed: a decoder-only language model (e.g. Qwen2ForCausalLM, LlamaForCausalLM)"
        )


def context_length(model_config: Any) -> int | None:
    """The model's context length in positions (``max_position_embeddings`` or its synonyms of the
    text config), or ``None`` when the config states none."""
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    for attr in CONTEXT_ATTRIBUTES:
        value = getattr(text, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --------------------------------------------------------------------------------------------
# Context length: prompt + largest budget + inserted text + summary <= max_position_embeddings
# --------------------------------------------------------------------------------------------


def _count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text``; without a tokenizer its UTF-8 bytes (an upper bound for byte-level BPE)."""
    if tokenizer is None:
        return len(text.encode("utf-8"))
    return len(tokenizer.encode(text, add_special_tokens=False))


def _prompt_tokens(tokenizer: Any, question: str, think_start: str) -> int:
    """Tokens of ``question``'s templated prompt (the instruction appended, as every run does)."""
    messages = Example.from_problem("check", "check", question, ("0",)).messages
    if tokenizer is None:
        return len((messages[0]["content"] + think_start + "\n").encode("utf-8"))
    return len(encode_prompt(tokenizer, messages, think_start))


def synthetic_prompt_tokens(tokenizer: Any, think_start: str) -> int:
    """Tokens of the longest prompt of the embedded synthetic task (the most items, two digits each)."""
    spec = TaskSpec()
    return _prompt_tokens(tokenizer, Problem(values=(spec.high,) * spec.max_items, spec=spec).question, think_start)


def check_context(model_config: Any, cfg: TrainConfig | EvalConfig | AskConfig, tokenizer: Any = None) -> None:
    """Raise :class:`UserError` when the longest sequence of a run does not fit the model's context.

    A thinking cut at budget b continues, on the positions after ``prompt + b``, with the forced text
    (cut marker + think end + answer delimiter) and a summary of at most ``summary_max_tokens``
    (summary branches of the packed tree restart at their cut: the tree adds no positions), so the
    largest position is ``prompt + b_max + inserted + summary_max_tokens``. The prompt counts as
    ``data.max_prompt_tokens`` (``max_prompt_tokens`` for ``eval``: longer prompts are dropped), the
    longest synthetic prompt for the embedded task, the question itself for ``ask``. Reads only the
    model's config (``AutoConfig``: no weights); ``tokenizer`` (optional) makes the counts exact,
    without it texts count one token per UTF-8 byte.
    """
    limit = context_length(model_config)
    if limit is None:
        return
    protocol = cfg.protocol()
    inserted = _count(tokenizer, protocol.cut_marker) + 1 + _count(tokenizer, protocol.answer_delimiter)
    room_hint = ""
    if isinstance(cfg, TrainConfig):
        plan = cfg.rollout.plan()
        key, budget = ("rollout.budgets" if cfg.rollout.budgets else "rollout.max_budget"), plan.max_budget
        if cfg.trainer.val_budgets and max(cfg.trainer.val_budgets) > budget:
            key, budget = "trainer.val_budgets", max(cfg.trainer.val_budgets)
        summary_key = "rollout.summary_max_tokens"
        if cfg.data.train == cfg.data.val == "synthetic":
            prompt_key, prompt = "the longest synthetic prompt", synthetic_prompt_tokens(tokenizer, protocol.think_start)
        else:
            prompt_key, prompt = "data.max_prompt_tokens", cfg.data.max_prompt_tokens
            room_hint = " (or lower data.max_prompt_tokens)"
    elif isinstance(cfg, EvalConfig):
        key, budget, summary_key = "budgets", max(cfg.budgets), "summary_max_tokens"
        prompt_key, prompt = "max_prompt_tokens", cfg.max_prompt_tokens
        room_hint = " (or lower max_prompt_tokens)"
    elif isinstance(cfg, AskConfig):
        key, budget, summary_key = "budgets", max(cfg.budgets), "summary_max_tokens"
        prompt_key, prompt = "the question's prompt", _prompt_tokens(tokenizer, cfg.question, protocol.think_start)
    else:  # pragma: no cover - typed callers only
        raise TypeError(f"check_context: no budgets in {type(cfg).__name__}")
    summary = protocol.summary_max_tokens
    need = prompt + budget + inserted + summary
    if need <= limit:
        return
    room = limit - prompt - inserted - summary
    allowed = f"{key} <= {room}{room_hint}" if room >= 1 else f"a smaller {prompt_key} or {summary_key}"
    raise UserError(
        f"{key}: {budget} thinking tokens do not fit the model's context of {limit} positions (max_position_embeddings): "
        f"{prompt_key} {prompt} + {budget} + {inserted} inserted + {summary_key} {summary} = {need}; allowed: {allowed}"
    )
