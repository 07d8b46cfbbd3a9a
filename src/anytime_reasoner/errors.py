"""Errors that reach the user as one line (the CLI prints them without a traceback), and the helpers
that phrase them.

The bottom of the package (docs/ARCHITECTURE.md): standard library only, so every layer can raise
:class:`UserError`, suggest a close name (:func:`did_you_mean`) or check an output path
(:func:`check_writable`) before anything heavy loads.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input from the user or a file: the message names the field and what is allowed."""


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), for a one-line error."""
    return (str(err).strip().splitlines() or [""])[0][:200]


def check_writable(path: str | Path, key: str, *, folder: bool = True) -> None:
    """``path`` (a folder, or a file when ``folder=False``) exists as that kind and is writable, or
    can be created: its nearest existing ancestor is a folder this process may write into."""
    target = Path(path).expanduser()
    kind = "a folder" if folder else "a file"
    if target.exists():
        if folder != target.is_dir():
            what = "a folder" if target.is_dir() else "a file"
            raise UserError(f"{key}: {target} is {what}; allowed: {kind} path (created if missing)")
        where = target if folder else target.parent
        if not os.access(target, os.W_OK) or not os.access(where, os.W_OK | os.X_OK):
            raise UserError(f"{key}: {target} is not writable; allowed: {kind} you can write to")
        return
    ancestor = next((p for p in target.absolute().parents if p.exists()), None)
    if ancestor is None:  # pragma: no cover - the root always exists
        return
    if not ancestor.is_dir():
        raise UserError(
            f"{key}: cannot create {target}: {ancestor} is a file, not a folder; allowed: a path whose parents are folders"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(
            f"{key}: cannot create {target}: {ancestor} is not writable; allowed: a path under a folder you can write to"
        )
