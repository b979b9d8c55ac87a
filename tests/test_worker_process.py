import signal
import subprocess
import sys

import pytest
from rq import Worker

from app.extensions import db, get_redis
from app.models import Submission
from tests.conftest import ROOT, process_env
from tests.helpers import upload_api, wait_until

pytestmark = pytest.mark.slow


def status_of(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id).status


def test_worker_process_completes_an_upload_and_stops_cleanly_on_sigterm(app, client, auth,
                                                                          world):
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=process_env(app),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        headers = auth.token("alice@uni.test")
        body = upload_api(client, headers, world.essay.id, b"work for the real worker\n",
                          "essay.txt").get_json()
        wait_until(lambda: status_of(body["id"]) == "completed", 60,
                   "the submission did not complete through the worker process")
        assert len(Worker.all(connection=get_redis())) == 1
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert "Warm shut down requested" in output or "stopping" in output.lower()
    assert Worker.all(connection=get_redis()) == []


def test_procfile_declares_the_four_processes():
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines())
    assert set(lines) == {"release", "web", "worker", "scheduler"}
    assert "db upgrade" in lines["release"]
    assert "gunicorn" in lines["web"] and "worker.py" in lines["worker"]


def test_worker_loads_every_job_module_before_it_forks(app):
    from app.steps import PERIODIC, STEPS

    # Every function an RQ job of ours names, and every step a pipeline job runs.
    named = ["jobs.runner.run_step", "jobs.grades.release", "jobs.grades.send_grade_email",
             *(job.func for job in PERIODIC.values()),
             *(f"jobs.{step.name}.perform" for step in STEPS)]
    # The worker as `python worker.py` builds it, in a fresh process, just before it would fork.
    script = ("import sys, worker\nfrom app import create_app\n"
              "with create_app().app_context():\n"
              "    worker.build_worker(None)\n"
              "    print(' '.join(m for m in sys.modules if m.startswith('jobs.')))\n")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=process_env(app),
                            capture_output=True, text=True, timeout=60, check=True)
    modules = set(loaded.stdout.split())
    for path in named:
        module, _, function = path.rpartition(".")
        assert module in modules, f"{module} would be imported anew by each work horse"
