"""`python worker.py` runs below the web process's CPU priority (WORKER_NICENESS), in a way
Linux's scheduler honours: a worker leading its own session lowers its autogroup too."""

import subprocess
import sys
from pathlib import Path

import pytest
from rq import Worker

from app.extensions import get_redis
from tests.conftest import ROOT, process_env
from tests.helpers import kill_tree, wait_until

pytestmark = pytest.mark.slow


def nice_value(pid):
    # /proc/<pid>/stat: the fields after the command's closing parenthesis; nice is the 19th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[16])


def autogroup(pid):
    path = Path(f"/proc/{pid}/autogroup")
    return path.read_text().strip() if path.exists() else None


def started_worker(app, own_session, **env):
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT,
                              env=process_env(app, **env), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=own_session)
    wait_until(lambda: [w.pid for w in Worker.all(connection=get_redis())] == [worker.pid],
               30, "the worker did not start")
    return worker


@pytest.mark.skipif(autogroup("self") is None, reason="needs Linux with autogroup scheduling")
def test_a_worker_leading_its_session_lowers_its_priority_and_its_autogroup(app):
    worker = started_worker(app, own_session=True, WORKER_NICENESS="10")
    try:
        # Never above the priority it was started with (this suite may itself run niced).
        assert nice_value(worker.pid) == max(10, nice_value("self"))
        assert autogroup(worker.pid).endswith("nice 10")
    finally:
        kill_tree(worker.pid)
        worker.wait(10)


def test_a_worker_in_anothers_session_lowers_only_its_own_priority(app):
    session_group = autogroup("self")
    worker = started_worker(app, own_session=False, WORKER_NICENESS="15")
    try:
        assert nice_value(worker.pid) == max(15, nice_value("self"))
        # The web may share this session: its group is left as it was.
        assert autogroup(worker.pid) == session_group == autogroup("self")
    finally:
        kill_tree(worker.pid)
        worker.wait(10)


def test_niceness_zero_leaves_the_worker_at_the_webs_priority(app):
    worker = started_worker(app, own_session=True, WORKER_NICENESS="0")
    try:
        assert nice_value(worker.pid) == nice_value("self")
        assert autogroup(worker.pid) is None or autogroup(worker.pid).endswith("nice 0")
    finally:
        kill_tree(worker.pid)
        worker.wait(10)
