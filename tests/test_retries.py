import re

import pytest
from rq import SimpleWorker

from app.extensions import db, get_redis
from app.models import StepRun, Submission
from app.pipeline import queue, requeue_step, retry_delays
from app.steps import QUEUES, STEP_BY_NAME
from tests.conftest import Auth, csrf_from, run_jobs
from tests.helpers import only_submission, upload_form
from tests.services import free_port
from tests.smtp import SmtpServer

BESIDES_EMAIL = tuple(name for name in QUEUES if name != "email")
MAX_ATTEMPTS = STEP_BY_NAME["email"].max_attempts
REQUEUE_FORM = re.compile(
    r'<form method="post" class="inline requeue"\s+action="([^"]+)">\s*'
    r'<input type="hidden" name="csrf_token" value="([^"]+)">'
)


@pytest.fixture
def smtp(app):
    with SmtpServer() as server:
        app.config["SMTP_URL"] = server.url
        yield server


def submit_essay(client, auth, world):
    """Alice uploads through the page; everything but the email step runs."""
    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, b"An essay about retrying.\n", "essay.txt")
    assert response.status_code == 303, response.get_data(as_text=True)
    run_jobs(BESIDES_EMAIL)
    return only_submission().id


def fail_email_step(client, auth, world, smtp):
    """A submission whose receipt email gave up because the mail server stayed down."""
    smtp.stop()
    submission_id = submit_essay(client, auth, world)
    run_jobs()
    return submission_id


def logged_in(app, email):
    user = Auth(app.test_client())
    assert user.login(email).status_code == 302
    return user.client


def step_on_page(html, name):
    found = re.search(rf'<li class="step [^"]*" id="step-{name}"[^>]*data-status="([^"]+)"', html)
    assert found, f"no {name} step on the page"
    return found.group(1)


def email_step(submission_id):
    db.session.remove()
    return db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name="email")
    ).scalar_one()


def submission_status(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id).status


def test_email_step_retries_while_smtp_is_down_and_sends_one_receipt_when_it_is_back(
        client, auth, world, smtp):
    smtp.stop()
    submission_id = submit_essay(client, auth, world)
    SimpleWorker(["email"], connection=get_redis()).work(
        burst=True, max_jobs=1, logging_level="WARNING")

    page = client.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert step_on_page(page, "email") == "retrying"
    [email] = [s for s in client.get(f"/api/v1/submissions/{submission_id}").get_json()["steps"]
               if s["name"] == "email"]
    # The student reads it in plain words; the attempt count is for staff.
    assert email == {"name": "email", "status": "retrying", "attempts": 1,
                     "detail": "Taking longer than usual; trying again shortly"}
    assert email_step(submission_id).detail == \
        f"Attempt 1 of {MAX_ATTEMPTS} did not finish; trying again"

    smtp.start()
    run_jobs()

    step = email_step(submission_id)
    assert (step.status, step.attempts, step.detail) == \
        ("succeeded", 2, "Sent to alice@uni.test")
    assert submission_status(submission_id) == "completed"
    assert len(smtp.messages) == 1


def test_after_the_last_attempt_staff_see_the_error_and_students_a_plain_detail(
        app, client, auth, world, smtp):
    submission_id = fail_email_step(client, auth, world, smtp)

    step = email_step(submission_id)
    assert (step.status, step.attempts) == ("failed", MAX_ATTEMPTS)
    assert "ConnectionRefusedError" in step.last_error
    assert submission_status(submission_id) == "needs_attention"

    staff_page = logged_in(app, "sam@uni.test").get(f"/submissions/{submission_id}") \
        .get_data(as_text=True)
    assert step_on_page(staff_page, "email") == "failed"
    assert step.last_error in staff_page
    assert f'action="/submissions/{submission_id}/steps/email/requeue"' in staff_page
    assert ">Requeue</button>" in staff_page

    student_page = client.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert step_on_page(student_page, "email") == "failed"
    assert "needs attention" in student_page
    assert "Receipt email could not finish; your submission is safely received" in student_page
    assert f"Gave up after {MAX_ATTEMPTS} attempts; staff have been alerted" in student_page
    assert "ConnectionRefusedError" not in student_page
    assert "Errno" not in student_page
    assert "requeue" not in student_page.lower()
    api = client.get(f"/api/v1/submissions/{submission_id}").get_json()
    assert "ConnectionRefused" not in str(api)


def test_staff_requeue_through_the_page_sends_one_receipt_and_completes(
        app, client, auth, world, smtp):
    submission_id = fail_email_step(client, auth, world, smtp)
    smtp.start()
    staff = logged_in(app, "sam@uni.test")

    page = staff.get(f"/submissions/{submission_id}").get_data(as_text=True)
    action, token = REQUEUE_FORM.search(page).groups()
    response = staff.post(action, data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/submissions/{submission_id}"

    page = staff.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert "Receipt email was requeued." in page
    assert step_on_page(page, "email") == "queued"
    assert submission_status(submission_id) == "processing"

    run_jobs()

    step = email_step(submission_id)
    assert (step.status, step.attempts, step.detail) == \
        ("succeeded", 1, "Sent to alice@uni.test")
    assert submission_status(submission_id) == "completed"
    assert len(smtp.messages) == 1
    page = staff.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert "Receipt email was requeued." not in page
    assert REQUEUE_FORM.search(page) is None


@pytest.mark.parametrize("email, status", [
    ("alice@uni.test", 403),  # the student who owns it sees it, but may not requeue
    ("bob@uni.test", 404),  # another student of the course
    ("carol@uni.test", 404),  # a student of another course
    ("tess@uni.test", 404),  # staff of another course
])
def test_only_staff_of_the_course_can_requeue(app, client, auth, world, smtp, email, status):
    submission_id = fail_email_step(client, auth, world, smtp)
    smtp.start()
    other = logged_in(app, email)
    token = csrf_from(other.get("/").get_data(as_text=True))

    response = other.post(f"/submissions/{submission_id}/steps/email/requeue",
                          data={"csrf_token": token})

    assert response.status_code == status
    assert email_step(submission_id).status == "failed"
    assert queue("email").count == 0
    run_jobs()
    assert smtp.messages == []


def test_requeue_without_the_form_token_is_refused(app, client, auth, world, smtp):
    submission_id = fail_email_step(client, auth, world, smtp)
    staff = logged_in(app, "sam@uni.test")

    response = staff.post(f"/submissions/{submission_id}/steps/email/requeue")

    assert response.status_code == 400
    assert email_step(submission_id).status == "failed"
    assert queue("email").count == 0


def test_requeue_of_a_step_that_has_not_failed_changes_nothing(app, client, auth, world, smtp):
    submission_id = submit_essay(client, auth, world)
    run_jobs()
    staff = logged_in(app, "sam@uni.test")
    token = csrf_from(staff.get(f"/submissions/{submission_id}").get_data(as_text=True))

    response = staff.post(f"/submissions/{submission_id}/steps/email/requeue",
                          data={"csrf_token": token}, follow_redirects=True)

    assert "Only a failed step can be requeued; Receipt email is succeeded." in \
        response.get_data(as_text=True)
    assert staff.post(f"/submissions/{submission_id}/steps/nonsense/requeue",
                      data={"csrf_token": token}).status_code == 404
    run_jobs()
    assert email_step(submission_id).attempts == 1
    assert len(smtp.messages) == 1


def test_requeue_while_redis_is_unreachable_keeps_the_step_queued_for_the_reconciler(
        app, client, auth, world, smtp):
    submission_id = fail_email_step(client, auth, world, smtp)
    staff = logged_in(app, "sam@uni.test")
    token = csrf_from(staff.get(f"/submissions/{submission_id}").get_data(as_text=True))
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("submissions_redis")

    response = staff.post(f"/submissions/{submission_id}/steps/email/requeue",
                          data={"csrf_token": token}, follow_redirects=True)

    assert response.status_code == 200
    assert "the queue is unreachable right now" in response.get_data(as_text=True)
    assert email_step(submission_id).status == "queued"
    assert submission_status(submission_id) == "processing"


@pytest.mark.parametrize("name, minutes", [
    ("scan", 8), ("plagiarism", 15), ("admin_sync", 12), ("email", 12),
])
def test_steps_that_use_a_service_keep_trying_through_an_outage_of_minutes(app, name, minutes):
    app.config["RETRY_BACKOFF_SCALE"] = 1.0
    step = STEP_BY_NAME[name]
    for _ in range(50):
        delays = retry_delays(step)
        assert len(delays) == step.max_attempts - 1
        # Even with every wait jittered to its shortest, the last attempt comes this late.
        assert sum(delays) >= minutes * 60
        # And none waits longer than its cap allows, so work resumes soon after the outage.
        assert max(delays) <= step.retry.cap * 1.5


def test_scan_retries_again_within_a_minute_and_a_half_once_the_scanner_is_back(app):
    app.config["RETRY_BACKOFF_SCALE"] = 1.0
    assert max(retry_delays(STEP_BY_NAME["scan"])) <= 90


def test_requeued_step_leaves_the_submission_needing_attention_while_another_is_failed(
        app, client, auth, world, smtp):
    app.config.update(ADMIN_SYNC_URL=f"http://127.0.0.1:{free_port()}/records",
                      ADMIN_SYNC_SECRET="records-secret")
    submission_id = fail_email_step(client, auth, world, smtp)
    submission = db.session.get(Submission, submission_id)
    assert {s.name for s in submission.steps if s.status == "failed"} == {"email", "admin_sync"}

    smtp.start()
    assert requeue_step(submission.step("email")).requeued
    run_jobs()
    assert email_step(submission_id).status == "succeeded"
    assert submission_status(submission_id) == "needs_attention"  # admin_sync still failed

    app.config["ADMIN_SYNC_URL"] = None  # records sync switched off: the step is skipped
    submission = db.session.get(Submission, submission_id)
    assert requeue_step(submission.step("admin_sync")).requeued
    assert submission_status(submission_id) == "processing"
    run_jobs()
    assert submission_status(submission_id) == "completed"
    assert len(smtp.messages) == 1
