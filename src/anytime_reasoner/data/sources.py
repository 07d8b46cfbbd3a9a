"""Where records come from: named sets in a data directory, local files, or the Hugging Face hub.

Names (resolved in the data directory, given as ``data_dir=`` or the ``ANYTIME_REASONER_DATA``
environment variable — there is deliberately no silent default):

    aime, amc, math500 (alias math), minerva, olympiad_bench  → test/<file>.json
    train/aime, train/math                                   → train/<file>.json

Files: ``.json`` (a list of objects, or ``{"data": [...]}``), ``.jsonl`` (one object per line) and
``.parquet`` (needs the optional ``pyarrow``). Anything shaped ``owner/name`` that is neither a
name nor an existing file is read with the optional ``datasets`` package (network needed).
Each failure is one :class:`UserError` line naming the source and what is allowed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anytime_reasoner.errors import UserError, did_you_mean

DATA_ENV = "ANYTIME_REASONER_DATA"
BENCHMARKS: dict[str, str] = {
    "aime": "test/aime.json",
    "amc": "test/amc.json",
    "math500": "test/math.json",
    "minerva": "test/minerva.json",
    "olympiad_bench": "test/olympiad_bench.json",
}
TRAIN_SETS: dict[str, str] = {"train/aime": "train/aime.json", "train/math": "train/math.json"}
ALIASES = {"math": "math500", "test/math": "math500", **{f"test/{k}": k for k in BENCHMARKS if k != "math500"}}
NAMED = {**BENCHMARKS, **TRAIN_SETS}
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
_HUB = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    """A resolved source: ``kind`` is ``named``, ``file`` or ``hub``; ``name`` labels its rows."""

    name: str
    kind: str
    location: str  # file path, or hub dataset name

    @property
    def stem(self) -> str:
        """A file-name-safe label (``train/aime`` → ``train_aime``)."""
        base = Path(self.location).stem if self.kind == "file" else self.name
        return re.sub(r"[^\w.-]+", "_", base)


def resolve_data_dir(data_dir: str | None) -> Path:
    """The data directory from the option, else the environment variable; error naming both."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    if not chosen:
        raise UserError(
            f"data_dir: no data directory; pass data_dir=DIR or set {DATA_ENV}=DIR "
            "(a folder holding test/aime.json, test/amc.json, ... and train/*.json)"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir else DATA_ENV
        raise UserError(f"{origin}: {path} is not a directory; pass data_dir=DIR or set {DATA_ENV}=DIR")
    return path


def resolve(source: str, data_dir: str | None = None) -> Source:
    """Map a name, a path or a hub dataset to a :class:`Source`."""
    name = ALIASES.get(source, source)
    if name in NAMED:
        path = resolve_data_dir(data_dir) / NAMED[name]
        if not path.is_file():
            raise UserError(f"{source}: {path} not found in the data directory")
        return Source(name, "named", str(path))
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in FILE_SUFFIXES:
            raise UserError(f"{source}: unsupported file type {path.suffix!r}; allowed: {', '.join(FILE_SUFFIXES)}")
        return Source(path.stem, "file", str(path))
    if path.is_dir() and path.suffix in FILE_SUFFIXES:
        raise UserError(f"{source}: is a folder; allowed: a {'/'.join(FILE_SUFFIXES)} file")
    if path.suffix in FILE_SUFFIXES:
        raise UserError(f"{source}: file not found")
    if _HUB.match(source):
        return Source(source, "hub", source)
    raise UserError(
        f"{source}: unknown data source{did_you_mean(source, [*NAMED, *ALIASES])}; allowed: {', '.join(NAMED)} "
        f"(in the data directory), a {'/'.join(FILE_SUFFIXES)} file, or a Hugging Face dataset owner/name"
    )


def check_available(source: Source) -> None:
    """Raise :class:`UserError` now if reading ``source`` would need a package that is missing, so
    a run fails before its model loads rather than after."""
    needs = {"hub": ("datasets", "hub"), "parquet": ("pyarrow", "parquet")}
    kind = "parquet" if source.location.endswith(".parquet") else source.kind
    if kind in needs and importlib.util.find_spec(needs[kind][0]) is None:
        module, extra = needs[kind]
        raise UserError(
            f"{source.name}: reading it needs the optional {module} package (pip install 'anytime-reasoner[{extra}]'), "
            "or pass a local .json/.jsonl file"
        )


def check_sources(sources: Sequence[str], data_dir: str | None, key: str | None) -> None:
    """A preflight check: every source resolves (a name in the data directory, a file, a hub
    dataset) and its reader's optional package is installed; errors are prefixed with ``key``."""
    for name in sources:
        try:
            check_available(resolve(name, data_dir))
        except UserError as err:
            raise UserError(f"{key}: {err}" if key else str(err)) from None


def read_records(source: Source, split: str = "train") -> Iterator[tuple[str, Any]]:
    """``(where, record)`` pairs; ``where`` is ``row i`` (0-based) or ``line i`` (1-based)."""
    if source.kind == "hub":
        yield from _read_hub(source.location, split)
        return
    path = Path(source.location)
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path, source.name)
    elif path.suffix == ".parquet":
        yield from _enumerate_rows(_read_parquet(path, source.name))
    else:
        yield from _enumerate_rows(_read_json(path, source.name))


def _enumerate_rows(rows: list[Any]) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(rows):
        yield f"row {i}", row


def _unreadable(name: str, path: Path, err: OSError | UnicodeDecodeError) -> UserError:
    """One line for a file that cannot be read as text (permissions, a folder, not UTF-8)."""
    if isinstance(err, UnicodeDecodeError):
        return UserError(f"{name}: {path} is not UTF-8 text ({err.reason} at byte {err.start}); allowed: UTF-8 JSON/JSONL")
    return UserError(f"{name}: cannot read {path} ({type(err).__name__}: {err.strerror or err})")


def _read_json(path: Path, name: str) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(name, path, err) from None
    except json.JSONDecodeError as err:
        raise UserError(f"{name}: {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UserError(f'{name}: {path} must hold a JSON list of objects (or {{"data": [...]}})')
    return data


def _read_jsonl(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(name, path, err) from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{name}: {path} line {lineno} is not valid JSON ({err.msg})") from None
        yield f"line {lineno}", record


def _read_parquet(path: Path, name: str) -> list[Any]:
    try:
        import pyarrow.parquet as pq  # optional: pyarrow (the [parquet] extra)
    except ImportError:
        raise UserError(
            f"{name}: reading .parquet needs the optional pyarrow package "
            "(pip install 'anytime-reasoner[parquet]'), or convert the file to .jsonl"
        ) from None
    try:
        return list(pq.read_table(path).to_pylist())
    except OSError as err:
        raise UserError(f"{name}: cannot read {path} ({type(err).__name__}: {err.strerror or err})") from None
    except Exception as err:  # pyarrow's ArrowInvalid & co: a file that is not parquet
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{name}: {path} is not a valid parquet file ({type(err).__name__}: {first})") from None


def _read_hub(name: str, split: str) -> Iterator[tuple[str, Any]]:
    try:
        import datasets  # optional: datasets (the [hub] extra)
    except ImportError:
        raise UserError(
            f"{name}: reading a Hugging Face dataset needs the optional datasets package "
            "(pip install 'anytime-reasoner[hub]'), or download it and pass a local .json/.jsonl/.parquet file"
        ) from None
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as err:  # network, unknown dataset, unknown split: all one line for the user
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{name}: could not load split {split!r} from the Hugging Face hub ({type(err).__name__}: {first}); "
            "check the name and the network, or pass a local file"
        ) from None
    yield from _enumerate_rows(list(rows))
