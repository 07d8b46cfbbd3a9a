"""``anytime-reasoner eval``: load model and benchmarks, evaluate in one pass, write and print.

Order of work, cheapest checks first: tokenizer (``</think>`` must be one token) → data (a bad
name or file fails before the model loads) → model → grading workers → evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anytime_reasoner.data.build import load_source
from anytime_reasoner.data.schema import Example
from anytime_reasoner.data.sources import resolve
from anytime_reasoner.errors import UserError

if TYPE_CHECKING:
    from anytime_reasoner.config import EvalConfig


def load_benchmarks(config: EvalConfig, tokenizer: Any) -> dict[str, list[Example]]:
    """Each ``data`` entry → validated examples (first ``limit``), one summary line each."""
    out: dict[str, list[Example]] = {}
    for source in config.data:
        name = resolve(source, config.data_dir).name
        if name in out:
            raise UserError(f"data: {source!r} is listed twice")
        examples, report = load_source(
            source,
            data_dir=config.data_dir,
            strict=config.strict,
            tokenizer=tokenizer,
            max_prompt_tokens=config.max_prompt_tokens,
            think_start=config.think_start,
        )
        print(report.summary())
        if not examples:
            raise UserError(f"data: {source!r} has no usable problems (see the line above)")
        out[name] = examples[: config.limit] if config.limit else examples
    return out


def settings_of(config: EvalConfig) -> Any:
    from anytime_reasoner.eval.runner import EvalSettings, model_fingerprint

    return EvalSettings(
        model=config.model,
        budgets=tuple(config.budgets),
        samples=config.samples,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        batch_size=config.batch_size,
        protocol=config.protocol(),
        model_fingerprint=model_fingerprint(config.model),
        mode=config.mode,
        budget_prompt=config.budget_prompt,
    )


def run_eval(config: EvalConfig) -> int:
    from pathlib import Path

    from anytime_reasoner.eval.report import markdown, write_results
    from anytime_reasoner.eval.runner import CACHE_FILE, ResultCache, evaluate
    from anytime_reasoner.models import codec_for, load_for_inference, load_tokenizer
    from anytime_reasoner.rewards.grader import GraderSettings, MathVerifier

    protocol = config.protocol()
    tokenizer = load_tokenizer(config.tokenizer or config.model)
    codec_for(tokenizer, protocol)
    benchmarks = load_benchmarks(config, tokenizer)
    loaded = load_for_inference(config.model, tokenizer, config.dtype, config.device, protocol, config.engine)
    settings = settings_of(config)
    cache = ResultCache(Path(config.out) / CACHE_FILE, settings.key())
    grading = GraderSettings.from_protocol(protocol, timeout=config.grade_timeout)
    with MathVerifier(grading) as verifier:
        results = evaluate(
            loaded.engine,
            loaded.codec,
            verifier,
            benchmarks,
            settings,
            prior=config.prior,
            cache=cache,
            progress=config.progress,
        )
    paths = write_results(results, config.out)
    print(markdown(results))
    print(
        f"{results.chunks_run} chunk(s) generated, {results.chunks_cached} from cache, {results.seconds:.1f}s; "
        f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name}"
    )
    return 0
