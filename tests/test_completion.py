"""A submission is completed exactly once, by whichever of its last steps finishes later, even
when two of them finish at the same moment on two workers."""

import os
import threading

import pytest

from app.extensions import db
from app.models import Event, Submission
from app.steps import QUEUES
from jobs import runner
from tests.conftest import run_jobs
from tests.helpers import upload_api

LAST_TWO = ("email", "thumbnail")


@pytest.mark.skipif(os.environ.get("TEST_DATABASE") != "postgres",
                    reason="SQLite lets one writer at a time: two steps cannot commit together")
def test_two_last_steps_finishing_together_complete_the_submission_once(
        app, client, auth, world, monkeypatch):
    headers = auth.token("alice@uni.test")
    body = upload_api(client, headers, world.essay.id, b"Two workers, one receipt.\n",
                      "essay.txt").get_json()
    submission_id = body["id"]
    # Everything but the last two steps; their jobs stay queued.
    run_jobs([name for name in QUEUES if name not in ("email", "media")])
    assert db.session.get(Submission, submission_id).status == "processing"
    db.session.remove()

    # Both steps have their outcome ready before either commits it, and looks at what is next.
    both_finished = threading.Barrier(2, timeout=20)
    record_step = runner.pipeline.record_step

    def record_then_wait(step_run, status, detail, error=None):
        record_step(step_run, status, detail, error)
        if status in ("succeeded", "skipped"):
            both_finished.wait()

    monkeypatch.setattr(runner.pipeline, "record_step", record_then_wait)
    outcomes, errors = {}, []

    def finish(step_name):
        try:
            with app.app_context():
                outcomes[step_name] = runner.run_step(submission_id, step_name)
                db.session.remove()
        except Exception as exc:  # reported below, with the step's name
            errors.append(f"{step_name}: {exc!r}")

    threads = [threading.Thread(target=finish, args=(name,)) for name in LAST_TWO]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert outcomes == {"email": "succeeded", "thumbnail": "succeeded"}
    assert db.session.get(Submission, submission_id).status == "completed"
    endings = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id, type="submission")
    ).scalars().all()
    assert [e.payload["status"] for e in endings if e.payload["status"] == "completed"] == [
        "completed"]
