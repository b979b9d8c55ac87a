"""`make run` as a new user meets it: one command, a page, a demo upload processed, Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests
from rq import Worker

from tests.conftest import ROOT
from tests.helpers import wait_until
from tests.services import free_port

pytestmark = [
    pytest.mark.slow,
    # make run gets a SQLite database of its own whatever the pass: once is enough.
    pytest.mark.skipif(os.environ.get("TEST_DATABASE") == "postgres",
                       reason="make run uses its own SQLite database; the SQLite pass runs it"),
]


def get_or_none(url, **kwargs):
    try:
        return requests.get(url, timeout=10, **kwargs)
    except requests.RequestException:  # not listening yet, or still starting up
        return None


def test_run_serves_the_page_and_a_demo_upload_completes(redis_server, tmp_path):
    port = free_port()
    log_path = tmp_path / "run.log"
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "CLAMD_SOCKET", "CLAMD_URL", "SMTP_URL")}
    env.update({
        "PORT": str(port), "REDIS_URL": redis_server.url.replace("/0", "/5"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "STORAGE_DIR": str(tmp_path / "storage"), "SUBMISSIONS_RUN_DIR": str(tmp_path / "run"),
        "WEB_CONCURRENCY": "1", "APP_ENV": "development",
    })
    with open(log_path, "w") as log:
        run = subprocess.Popen([sys.executable, "scripts/dev.py", "run"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        login_page = wait_until(lambda: get_or_none(f"{base}/login"), 90,
                              "the page never came up")
        assert login_page.status_code == 200 and "Log in" in login_page.text
        password = re.search(r"alice@example.edu\s+password: (\S+)", log_path.read_text())
        assert password, log_path.read_text()

        token = requests.post(f"{base}/api/v1/tokens", timeout=5, json={
            "email": "alice@example.edu", "password": password.group(1)}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        assignment = requests.get(f"{base}/api/v1/assignments", headers=headers,
                                  timeout=5).json()["assignments"][0]
        accepted = requests.post(
            f"{base}/api/v1/assignments/{assignment['id']}/submissions", headers=headers,
            files={"file": ("essay.txt", b"An essay for the demo run.\n")}, timeout=10)
        assert accepted.status_code == 202
        location = base + accepted.headers["Location"]

        def completed():
            body = requests.get(location, headers=headers, timeout=5).json()
            return body if body["status"] == "completed" else None

        body = wait_until(completed, 90, lambda: f"not completed: {log_path.read_text()[-3000:]}")
        scan = next(step for step in body["steps"] if step["name"] == "scan")
        assert scan["detail"] == "No viruses found"
        # Staff read which scanner it was.
        staff_password = re.search(r"staff@example.edu\s+password: (\S+)", log_path.read_text())
        staff_token = requests.post(f"{base}/api/v1/tokens", timeout=5, json={
            "email": "staff@example.edu", "password": staff_password.group(1)}).json()["token"]
        staff_view = requests.get(location, timeout=5,
                                  headers={"Authorization": f"Bearer {staff_token}"}).json()
        scan = next(step for step in staff_view["steps"] if step["name"] == "scan")
        assert scan["detail"].startswith("No threats found; scanned by "), scan
        # One worker per core of the machine.
        workers = Worker.all(connection=redis.Redis.from_url(env["REDIS_URL"]))
        assert len(workers) == os.cpu_count(), log_path.read_text()[-3000:]
        # Each below the web's CPU priority, in a session (and scheduling group) of its own.
        for worker in workers:
            group = Path(f"/proc/{worker.pid}/autogroup")
            if group.exists():
                assert group.read_text().strip().endswith("nice 10"), group.read_text()
        # Every line says which process wrote it.
        log = log_path.read_text()
        for name in ("web.1", "worker.1", "scheduler.1"):
            assert re.search(rf"^\S+ {re.escape(name)}\s+\| \S", log, re.MULTILINE), log[-3000:]
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            raise
    assert get_or_none(f"{base}/login") is None, "the web server outlived Ctrl-C"
