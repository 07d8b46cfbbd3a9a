"""Build training and evaluation sets in one schema and write them (``anytime-reasoner data``).

``load_source`` is the one entry point training and evaluation use: resolve → read → validate →
(optionally) drop prompts too long for the tokenizer. ``run_data`` writes JSONL, plus parquet
when pyarrow is installed, and prints one summary line per source; a source without one good
row (every row bad, or an empty file; a row repeating an earlier source counts as good) is an
error naming it, raised before anything is written.

Output layout: ``out=`` ending in ``.jsonl`` merges every source into that file (duplicates
detected across sources); any other ``out=`` is a folder with one ``<source>.jsonl`` each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anytime_reasoner.config import DataBuildConfig
from anytime_reasoner.data.prompts import encode_prompt
from anytime_reasoner.data.schema import Example
from anytime_reasoner.data.sources import read_records, resolve
from anytime_reasoner.data.validate import DataReport, build_examples
from anytime_reasoner.errors import UserError
from anytime_reasoner.protocol import THINK_START


def load_source(
    source: str,
    *,
    data_dir: str | None = None,
    strict: bool = False,
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    split: str = "train",
    seen: dict[str, str] | None = None,
    think_start: str = THINK_START,
) -> tuple[list[Example], DataReport]:
    """Validated examples of one source and the report of what was skipped."""
    resolved = resolve(source, data_dir)
    count = None
    if tokenizer is not None and max_prompt_tokens is not None:

        def count(example: Example) -> int:
            return len(encode_prompt(tokenizer, example.messages, think_start))

    return build_examples(
        read_records(resolved, split),
        resolved.name,
        strict=strict,
        count_tokens=count,
        max_prompt_tokens=max_prompt_tokens,
        seen=seen,
    )


def write_jsonl(examples: Sequence[Example], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_row(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_parquet(examples: Sequence[Example], path: Path) -> bool:
    """Write parquet next to the JSONL; ``False`` (nothing written) when pyarrow is missing."""
    try:
        import pyarrow as pa  # optional: pyarrow (the [parquet] extra)
        import pyarrow.parquet as pq  # optional: pyarrow
    except ImportError:
        return False
    pq.write_table(pa.Table.from_pylist([e.to_row() for e in examples]), path)
    return True


def read_examples(path: str | Path) -> list[Example]:
    """Read a file written by :func:`write_jsonl` (strictly: it was validated when written)."""
    examples, _ = load_source(str(path), strict=True)
    return examples


def _load_tokenizer(path: str | None) -> Any:
    if path is None:
        return None
    from transformers import AutoTokenizer  # heavy: transformers, only when prompts are counted

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as err:
        raise UserError(f"tokenizer: cannot load {path!r} ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None


def run_data(config: DataBuildConfig) -> int:
    """Build every source, write it, print the summary lines."""
    tokenizer = _load_tokenizer(config.tokenizer)
    out = Path(config.out)
    merged = out.suffix == ".jsonl"
    seen: dict[str, str] | None = {} if merged else None
    groups: list[tuple[str, list[Example]]] = []
    for source in config.sources:
        examples, report = load_source(
            source,
            data_dir=config.data_dir,
            strict=config.strict,
            tokenizer=tokenizer,
            max_prompt_tokens=config.max_prompt_tokens if tokenizer is not None else None,
            split=config.split,
            seen=seen,
        )
        print(report.summary())
        if not examples and not report.skipped["duplicate"]:
            # no good row at all (a source whose good rows all repeat earlier ones is not empty)
            raise UserError(f"{source}: no usable problems ({report.read} read, 0 kept: see the line above)")
        groups.append((resolve(source, config.data_dir).stem, examples))
    targets = [(out, [e for _, ex in groups for e in ex])] if merged else [(out / f"{s}.jsonl", ex) for s, ex in groups]
    for path, examples in targets:
        write_jsonl(examples, path)
        extra = ""
        if config.parquet:
            wrote = write_parquet(examples, path.with_suffix(".parquet"))
            extra = " (+ .parquet)" if wrote else " (no .parquet: pyarrow is not installed)"
        print(f"wrote {len(examples)} rows to {path}{extra}")
    return 0
