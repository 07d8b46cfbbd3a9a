"""Random streams derived from names, so that no two phases of a run ever share one.

Every sampling call gets its own seed, derived by hashing the parts that identify it — for example
``derive_seed(run_seed, step, "thinking")`` — instead of arithmetic such as ``seed + 1``, which makes
the summary phase of step t replay the thinking phase of step t+1. The hash is stable across
processes and machines (``hash()`` is not), so a resumed run replays exactly the streams it would
have used.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 31  # fits every consumer (torch, numpy, random)


def derive_seed(*parts: object) -> int:
    """A seed in ``[0, 2**31)`` from the ``repr``-free string form of ``parts`` (ints and strings)."""
    text = ":".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (1 << SEED_BITS)
