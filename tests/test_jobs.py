"""The job runner of ``demo`` and ``compare``: children forked from one host that imported the heavy
modules once, each a process of its own with its exit code and log, run in dependency order."""

import json
import os
import signal
import time

import pytest

from anytime_reasoner.errors import UserError
from anytime_reasoner.jobs import Job, JobHost, run_jobs


def test_a_job_is_forked_from_the_host_with_its_imports_and_one_thread(tmp_path):
    host = JobHost(preload=("json", "torch"), module="tests.jobs_probe")
    try:
        host.start(Job("ok", ["0"], tmp_path / "ok.log"))
        host.start(Job("fails", ["3"], tmp_path / "sub" / "fails.log"))
        ended = host.finished(timeout=60.0)  # one or both (the second may have ended by then)
        if len(ended) < 2:
            ended += host.finished(timeout=60.0)
        ended.sort()
    finally:
        host.close()
    assert ended == [("fails", 3), ("ok", 0)]  # each job's own exit code
    ok, fails = ((tmp_path / name).read_text().splitlines() for name in ("ok.log", "sub/fails.log"))
    first, second = json.loads(ok[0]), json.loads(fails[0])
    # torch came from the host (the probe imports nothing heavy), transformers was not preloaded
    assert first["preloaded"] == ["json", "torch"] and first["omp_threads"] == "1" and first["argv"] == ["0"]
    assert len({first["pid"], second["pid"], os.getpid()}) == 3  # two processes, neither of them this one
    assert ok[1] == "a line on stderr"  # stdout and stderr both go to the log


def test_a_dead_host_is_reported_while_its_jobs_still_run(tmp_path):
    host = JobHost(preload=(), module="tests.jobs_probe")
    log = tmp_path / "long.log"
    try:
        host.start(Job("long", ["0", "60"], log))
        while not log.is_file() or not log.read_text():  # the job runs
            time.sleep(0.05)
        os.kill(host.pid, signal.SIGKILL)
        with pytest.raises(UserError, match="the job host .* died"):
            host.finished(timeout=30.0)  # at once: the job holds no end of the host's pipe
    finally:
        os.kill(json.loads(log.read_text().splitlines()[0])["pid"], signal.SIGKILL)  # the orphaned job
        host.close()


def test_failed_job_reports_its_log(tmp_path):
    bad = Job("train x", ["train", "rollout.n=0"], tmp_path / "x.log")
    with pytest.raises(UserError, match=r"train x failed \(exit 2\).*rollout.n"):
        run_jobs([bad], parallel=1, progress=lambda done: None, preload=())  # it fails before any heavy import


def test_jobs_wait_for_what_they_need(tmp_path):
    order = []
    first = Job("a", ["--help"], tmp_path / "a.log")
    second = Job("b", ["--help"], tmp_path / "b.log", after=("a",))
    seconds = run_jobs([second, first], parallel=2, progress=lambda done: order.append(sorted(done)), preload=())
    # b cannot start before a is done, so some call saw {a} without b
    assert ["a"] in order and order[-1] == ["a", "b"]
    assert set(seconds) == {"a", "b"} and "train" in (tmp_path / "b.log").read_text()  # the --help text


def test_a_job_waiting_for_an_unplanned_one_is_an_error(tmp_path):
    with pytest.raises(UserError, match="not planned: b after \\('z',\\)"):
        run_jobs([Job("b", ["--help"], tmp_path / "b.log", after=("z",))], 2, lambda done: None, preload=())
