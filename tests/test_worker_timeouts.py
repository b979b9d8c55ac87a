"""A job of ours runs in the worker's own process, and one that hangs is still stopped at its
timeout, leaving the worker to carry on with the queue."""

import subprocess
import sys

import pytest
from rq import Queue

from app.extensions import db, get_redis
from app.models import Submission
from tests.conftest import ROOT, process_env
from tests.helpers import upload_api, wait_until

pytestmark = pytest.mark.slow


def test_a_job_that_hangs_is_stopped_at_its_timeout_and_the_worker_carries_on(
        app, client, auth, world, tmp_path):
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=process_env(app),
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        hung = Queue("email", connection=get_redis()).enqueue("time.sleep", 300, job_timeout=2)
        wait_until(lambda: hung.get_status(refresh=True) == "failed", 60,
                   lambda: f"the hung job was not stopped:\n{log_path.read_text()[-3000:]}")
        assert "JobTimeoutException" in hung.latest_result().exc_string

        body = upload_api(client, auth.token("alice@uni.test"), world.essay.id,
                          b"handed in after the hung job\n", "essay.txt").get_json()

        def completed():
            db.session.remove()
            return db.session.get(Submission, body["id"]).status == "completed"

        wait_until(completed, 60, lambda: f"the worker did not carry on:\n"
                                          f"{log_path.read_text()[-3000:]}")
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
