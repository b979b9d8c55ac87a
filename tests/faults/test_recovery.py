"""States a worker killed with -9 at the wrong moment leaves behind, each set up exactly (the
fault scenarios hit them only by chance), and the reconciler finishing the submission."""

from sqlalchemy import update

from app.extensions import db, get_redis
from app.models import Submission
from app.pipeline import queue
from jobs.maintenance import reconcile
from tests.conftest import run_jobs
from tests.helpers import upload_api


def upload_essay(app, client, auth, world):
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    response = upload_api(client, auth.token("alice@uni.test"), world.essay.id,
                          b"An essay about queues.\n", "essay.txt")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def status_of(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id).status


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(
        app, client, auth, world):
    submission_id = upload_essay(app, client, auth, world)
    scan = queue("scan")
    # RQ's dequeue moves the job to this list, then marks it started; the worker died between.
    get_redis().lmove(scan.key, scan.intermediate_queue_key)
    # A worker that took it a moment ago is about to start it: it is given the grace period.
    app.config["RECONCILE_GRACE_SECONDS"] = 60
    assert reconcile()["requeued"] == 0
    app.config["RECONCILE_GRACE_SECONDS"] = 0  # first seen there a while ago, as it were
    assert reconcile()["requeued"] == 1
    run_jobs()
    assert status_of(submission_id) == "completed"


def test_a_submission_whose_last_step_ended_without_completing_it_is_completed(
        app, client, auth, world):
    submission_id = upload_essay(app, client, auth, world)
    run_jobs()
    # Every step done, the submission still processing: a worker killed between the last
    # step's commit and complete_if_done.
    db.session.execute(update(Submission).where(Submission.id == submission_id)
                       .values(status="processing"))
    db.session.commit()
    assert reconcile()["completed"] == 1
    assert status_of(submission_id) == "completed"
