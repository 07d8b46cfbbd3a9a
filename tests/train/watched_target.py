"""A stand-in for the rollout worker's module, slow to import as torch and an engine are
(tests/train/test_worker_process.py): it leaves ``$WATCHED_MARKER.importing`` when its import
starts, sleeps ``$WATCHED_IMPORT_SECONDS``, and its ``main`` leaves ``$WATCHED_MARKER.ran``."""

import os
import time
from pathlib import Path

Path(os.environ["WATCHED_MARKER"] + ".importing").write_text(str(os.getpid()), encoding="utf-8")
time.sleep(float(os.environ.get("WATCHED_IMPORT_SECONDS", "0")))


def main(spec, word: str) -> None:
    Path(os.environ["WATCHED_MARKER"] + ".ran").write_text(f"{spec.device} {word}", encoding="utf-8")
