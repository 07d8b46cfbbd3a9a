"""A command for tests/test_jobs.py, run by the job host as ``python -m tests.jobs_probe CODE [SECONDS]``:
prints what the job inherited (modules already imported, thread settings, its pid), sleeps SECONDS
(default 0), exits with CODE."""

import json
import os
import sys
import time

if __name__ == "__main__":
    inherited = {
        "preloaded": sorted(m for m in ("json", "torch", "transformers") if m in sys.modules),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "pid": os.getpid(),
        "argv": sys.argv[1:],
    }
    print(json.dumps(inherited), flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    raise SystemExit(int(sys.argv[1]))
