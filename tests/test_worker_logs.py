"""What a `python worker.py` says: every pipeline job, but not the periodic upkeep that runs
every few seconds, which would bury the rest (in `make run`, the demo accounts' table)."""

import signal
import subprocess
import sys

import pytest
from rq import Queue

from app.extensions import db, get_redis
from app.models import Submission
from tests.conftest import ROOT, process_env
from tests.helpers import upload_api, wait_until

pytestmark = pytest.mark.slow


def test_a_worker_logs_pipeline_jobs_but_not_the_periodic_upkeep(app, client, auth, world,
                                                                 tmp_path):
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=process_env(app),
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        maintenance = Queue("maintenance", connection=get_redis())
        upkeep = [maintenance.enqueue("jobs.maintenance.reconcile"),
                  maintenance.enqueue("jobs.rollup.roll_up")]
        body = upload_api(client, auth.token("alice@uni.test"), world.essay.id,
                          b"an essay to log\n", "essay.txt").get_json()

        def all_done():
            db.session.remove()
            done = db.session.get(Submission, body["id"]).status == "completed"
            return done and all(job.get_status(refresh=True) == "finished" for job in upkeep)

        wait_until(all_done, 60, lambda: log_path.read_text()[-3000:])
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    said = log_path.read_text()
    assert f"submission {body['id']}" in said  # the scan job's line
    assert "Job OK" in said
    for job in upkeep:
        assert job.id not in said, said[-3000:]
    assert "event=reconcile " not in said and "event=rollup" not in said
    assert "result is kept" not in said
