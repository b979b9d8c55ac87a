import hashlib
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from app import pipeline
from app.extensions import db
from app.models import Event, StepRun
from tests.conftest import Auth, run_jobs
from tests.helpers import upload_api
from tests.simulators import (  # noqa: F401
    RECORDS_SECRET,
    records_simulator,
    rerun_after_crash,
    run_jobs_when_due,
    scheduled_retries,
)

ESSAY = b"My essay about student records, written for the records system test.\n"


def upload(client, auth, email, assignment_id, content=ESSAY, filename="essay.txt"):
    headers = auth.token(email)
    response = upload_api(client, headers, assignment_id, content, filename)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"], headers


def sync_step(client, headers, submission_id):
    """The step as the course's staff see it: its detail as recorded."""
    staff = Auth(client).token("sam@uni.test")
    view = client.get(f"/api/v1/submissions/{submission_id}", headers=staff).get_json()
    return next(s for s in view["steps"] if s["name"] == "admin_sync")


def sync_statuses(submission_id):
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id, type="step").order_by(Event.id)
    ).scalars()
    return [e.payload["status"] for e in events if e.payload["step"] == "admin_sync"]


def test_without_a_records_system_the_step_is_skipped_with_the_reason(client, auth, world):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "skipped"
    assert step["detail"] == (
        "Not sent: no student-records system is configured (ADMIN_SYNC_URL)")


def test_without_a_signing_secret_nothing_is_sent(app, client, auth, world, records):
    app.config["ADMIN_SYNC_SECRET"] = None
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "skipped"
    assert step["detail"] == (
        "Not sent: ADMIN_SYNC_SECRET is not set, so the record cannot be signed")
    assert records.requests() == []


def test_signed_record_is_accepted_by_the_records_system(client, auth, world, records):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "succeeded"
    assert step["detail"] == "Recorded in student records as REC-00001"
    [stored] = records.records.values()
    assert stored["record"]["submission_id"] == submission
    assert stored["record"]["student_email"] == "alice@uni.test"
    assert stored["record"]["course"] == "CS101"
    assert stored["record"]["sha256"] == hashlib.sha256(ESSAY).hexdigest()
    assert stored["idempotency_key"].startswith(f"submission-{submission}-")


def test_record_with_a_bad_signature_is_refused_and_never_stored(app, client, auth, world,
                                                                 records):
    app.config["ADMIN_SYNC_SECRET"] = "not-the-shared-secret"
    submission, _ = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    sam = auth.token("sam@uni.test")
    step = sync_step(client, sam, submission)
    # Signing the same record with the same secret again cannot help: it waits for staff.
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert step["detail"] == (
        "The student-records system refused the record; staff have been alerted")
    assert step["error"] == (
        "Refused: The student-records system refused the request (401 Unauthorized: The "
        "signature does not match the body)")
    assert [r.status for r in records.requests()] == [401]
    assert records.records == {}
    assert scheduled_retries() == {}

    # With the secret put right, staff requeue it and the record is stored once.
    app.config["ADMIN_SYNC_SECRET"] = RECORDS_SECRET
    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission, name="admin_sync")).scalar_one()
    assert pipeline.requeue_step(step_run).requeued
    run_jobs()
    assert sync_step(client, sam, submission)["status"] == "succeeded"
    assert len(records.records) == 1


def test_a_records_system_answering_404_is_tried_again(app, client, auth, world, records):
    app.config["ADMIN_SYNC_URL"] = records.url + "/no-such-path"
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, auth.token("sam@uni.test"), submission)
    assert (step["status"], step["attempts"]) == ("failed", 8)
    assert "answered 404" in step["error"]


def test_server_errors_are_retried_until_the_record_is_stored(client, auth, world, records):
    records.inject(status=500, times=2)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "succeeded"
    assert step["attempts"] == 3
    assert sync_statuses(submission).count("retrying") == 2
    assert [r.status for r in records.requests()] == [500, 500, 201]
    assert len(records.records) == 1


def test_answer_lost_after_storing_is_resent_and_recorded_once(app, client, auth, world,
                                                               records):
    app.config["ADMIN_SYNC_TIMEOUT"] = 0.5
    records.inject(delay=1.5)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "succeeded"
    assert step["detail"] == "Recorded in student records as REC-00001"
    sent = records.requests("POST")
    assert len(sent) == 2
    assert len(records.records) == 1


def test_rerun_of_a_recorded_submission_sends_nothing(client, auth, world, records):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()
    rerun_after_crash(submission, "admin_sync")
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "succeeded"
    assert step["detail"] == "Already recorded as REC-00001"
    assert len(records.requests("POST")) == 1
    assert len(records.records) == 1


@pytest.mark.slow
def test_rate_limited_record_waits_until_the_date_asked(client, auth, world, records):
    not_before = datetime.now(UTC) + timedelta(seconds=2)
    records.inject(status=429, retry_after=format_datetime(not_before, usegmt=True))
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id)
    run_jobs()

    step = sync_step(client, alice, submission)
    assert step["status"] == "retrying"
    assert re.fullmatch(r"The student-records system asked us to slow down; "
                        r"trying again in \d s \(attempt 1 of 8\)", step["detail"])
    [due] = scheduled_retries().values()
    asked = not_before.replace(microsecond=0)
    assert due >= asked

    run_jobs_when_due()
    assert sync_step(client, alice, submission)["status"] == "succeeded"
    retried = records.requests()[1]
    assert retried.received_at >= asked.timestamp()
    assert len(records.records) == 1
