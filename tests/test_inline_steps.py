"""A submission's own work (scan, store, receipt email, preview) runs back to back in one job
where the worker serves those queues; the steps that wait on outside systems get jobs of their
own. Each step still has its own attempt, time limit, retries and place in the event trail."""

import signal
import time

import pytest
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from app.extensions import db, get_redis
from app.models import Event, StepRun
from app.pipeline import queue
from app.steps import STEP_BY_NAME
from jobs.runner import own_time_limit, serving
from tests.conftest import Auth, run_jobs
from tests.helpers import upload_api
from tests.services import free_port

OWN_WORK = ("scan", "store", "email", "thumbnail")


@pytest.fixture(autouse=True)
def built_in_scanner(app):
    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)


def upload(app, world, text=b"An essay handed in at the deadline.\n"):
    api = app.test_client()
    response = upload_api(api, Auth(api).token("alice@uni.test"), world.essay.id, text,
                          "essay.txt")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def steps_of(submission_id):
    db.session.remove()
    return {step.name: step for step in db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id)).scalars()}


def trail(submission_id, name):
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id, type="step").order_by(Event.id)
    ).scalars()
    return [event.payload["status"] for event in events if event.payload["step"] == name]


def test_a_submissions_own_steps_run_in_one_job_and_outside_systems_get_their_own(app, world):
    submission_id = upload(app, world)
    run_jobs()
    steps = steps_of(submission_id)
    assert {step.status for step in steps.values()} <= {"succeeded", "skipped"}
    assert len({steps[name].job_id for name in OWN_WORK}) == 1
    assert len({steps["scan"].job_id, steps["plagiarism"].job_id,
                steps["admin_sync"].job_id}) == 3
    for name in ("store", "email", "thumbnail", "plagiarism"):
        assert trail(submission_id, name) == ["queued", "running", "succeeded"], name
    assert all(steps[name].attempts == 1 for name in OWN_WORK)


def test_a_step_whose_queue_the_worker_does_not_serve_waits_in_its_queue(app, world):
    submission_id = upload(app, world)
    run_jobs(["scan"])
    store = steps_of(submission_id)["store"]
    assert store.status == "queued"
    assert store.job_id in queue("store").job_ids

    run_jobs(["store"])
    steps = steps_of(submission_id)
    assert steps["store"].status == "succeeded"
    for name in ("email", "thumbnail"):
        assert steps[name].status == "queued"
        assert steps[name].job_id in queue(STEP_BY_NAME[name].queue).job_ids


def test_a_worker_told_to_stop_leaves_the_steps_it_makes_ready_in_their_queues(app, world):
    submission_id = upload(app, world)
    worker = SimpleWorker(["scan", "store", "email", "media"], connection=get_redis())
    with serving(["scan", "store", "email", "media"], stopping=lambda: True):
        worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    steps = steps_of(submission_id)
    assert steps["scan"].status == "succeeded"
    assert steps["store"].status == "queued"
    assert steps["store"].job_id in queue("store").job_ids


def test_a_step_run_on_that_fails_gets_a_retry_job_of_its_own_and_the_rest_carry_on(app, world):
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    app.config["RETRY_BACKOFF_SCALE"] = 1  # as in production: the next attempt waits
    submission_id = upload(app, world)
    run_jobs()
    steps = steps_of(submission_id)
    email = steps["email"]
    assert (email.status, email.attempts) == ("retrying", 1)
    assert email.detail == (f"Attempt 1 of {STEP_BY_NAME['email'].max_attempts} did not "
                            "finish; trying again")
    assert "ConnectionRefusedError" in email.last_error
    # Its next attempt waits as a job of its own, carrying the retries it has left.
    assert email.job_id != steps["scan"].job_id
    assert email.job_id in ScheduledJobRegistry(queue=queue("email")).get_job_ids()
    retry = queue("email").fetch_job(email.job_id)
    assert retry.retries_left == STEP_BY_NAME["email"].max_attempts - 2
    # The preview after it in the same job was drawn all the same.
    assert steps["thumbnail"].status == "succeeded"
    assert steps["thumbnail"].job_id == steps["scan"].job_id


def test_a_step_run_on_has_its_own_time_and_the_jobs_clock_waits_meanwhile():
    with UnixSignalDeathPenalty(60, JobTimeoutException):
        started = time.monotonic()
        with pytest.raises(JobTimeoutException), own_time_limit(1):
            time.sleep(10)
        assert time.monotonic() - started < 5
        # The job's own alarm is set again, with the time it had left.
        assert 55 <= signal.alarm(0) <= 60
        signal.alarm(60)
