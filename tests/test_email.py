import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from rq import SimpleWorker, Worker
from sqlalchemy import update

from app import pipeline
from app.extensions import db, get_redis
from app.models import OutboxEmail, StepRun, Submission
from app.services import mailer
from app.steps import QUEUES, STEP_BY_NAME
from tests.conftest import ROOT, process_env, run_jobs
from tests.helpers import (
    descendants,
    kill_tree,
    logged_in,
    only_submission,
    upload_form,
    wait_until,
)
from tests.smtp import SmtpServer

BESIDES_EMAIL = tuple(name for name in QUEUES if name != "email")
ESSAY = b"Queues let a web request finish before the slow work does.\n"


@pytest.fixture
def smtp(app):
    with SmtpServer() as server:
        app.config["SMTP_URL"] = server.url
        yield server


def submit_essay(client, auth, world):
    """Alice uploads through the page; everything but the email step runs."""
    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 303, response.get_data(as_text=True)
    run_jobs(BESIDES_EMAIL)
    return only_submission().id


def run_one_job(queue_name):
    SimpleWorker([queue_name], connection=get_redis()).work(
        burst=True, max_jobs=1, logging_level="WARNING")
    db.session.remove()


def email_step(submission_id):
    db.session.remove()
    return db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name="email")
    ).scalar_one()


def outbox():
    db.session.remove()
    return db.session.execute(db.select(OutboxEmail)).scalars().all()


def message_id(message):
    # The parser keeps the space after the colon in this header's value.
    return str(message["Message-ID"]).strip()


def test_receipt_arrives_with_assignment_times_file_and_link(client, auth, world, smtp):
    submission_id = submit_essay(client, auth, world)
    run_jobs()

    submission = only_submission()
    assert submission.status == "completed"
    assert email_step(submission_id).detail == "Sent to alice@uni.test"
    [message] = smtp.messages
    assert message["To"] == "alice@uni.test"
    assert message["Subject"] == f"Receipt: CS101 Essay (#{submission_id})"
    assert message_id(message) == outbox()[0].message_id
    body = message.get_content()
    received = submission.received_at
    assert "CS101: Essay" in body
    assert f"Received: {received:%Y-%m-%d %H:%M:%S} UTC" in body
    london = received.astimezone(ZoneInfo("Europe/London"))
    assert f"Course time (Europe/London): {london:%a %d %b %Y, %H:%M %Z}" in body
    assert "File: essay.txt" in body
    assert f"({len(ESSAY)} bytes)" in body
    assert f"SHA-256: {hashlib.sha256(ESSAY).hexdigest()}" in body

    link = f"http://submissions.test/submissions/{submission_id}"
    assert link in body
    page = client.get(urlsplit(link).path)
    assert page.status_code == 200
    assert hashlib.sha256(ESSAY).hexdigest() in page.get_data(as_text=True)


def test_without_a_mail_server_the_receipt_goes_to_the_outbox(app, client, auth, world):
    app.config["SMTP_URL"] = None
    submission_id = submit_essay(client, auth, world)
    run_jobs()

    assert only_submission().status == "completed"
    assert email_step(submission_id).detail == \
        "Saved to the outbox for alice@uni.test (no mail server configured)"
    [row] = outbox()
    assert (row.to, row.transport) == ("alice@uni.test", "outbox")
    assert row.sent_at is not None
    assert f"http://submissions.test/submissions/{submission_id}" in row.body


def test_a_recipient_the_mail_server_refuses_for_good_fails_at_once_with_its_reply(
        app, client, auth, world, smtp):
    smtp.refuse("alice@uni.test", "550 5.1.1 <alice@uni.test>: no such mailbox")
    submission_id = submit_essay(client, auth, world)
    run_jobs()

    step = email_step(submission_id)
    assert (step.status, step.attempts) == ("failed", 1)
    assert step.detail == "The mail server refused the email; staff have been alerted"
    # The server's own words are for staff: they may name hosts or settings.
    assert step.last_error == ("Refused: The mail server refused the email to alice@uni.test: "
                               "550 5.1.1 <alice@uni.test>: no such mailbox")
    assert only_submission().status == "needs_attention"
    assert smtp.messages == []
    assert outbox()[0].sent_at is None
    student_page = client.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert "The mail server refused the email; staff have been alerted" in student_page
    assert "no such mailbox" not in student_page
    staff_page = logged_in(app, "sam@uni.test").get(f"/submissions/{submission_id}")
    assert "no such mailbox" in staff_page.get_data(as_text=True)

    # Once the address works, staff requeue it and the one receipt goes out.
    smtp.refuse("alice@uni.test", None)
    assert pipeline.requeue_step(email_step(submission_id)).requeued
    run_jobs()
    assert email_step(submission_id).detail == "Sent to alice@uni.test"
    assert [m["To"] for m in smtp.messages] == ["alice@uni.test"]
    assert only_submission().status == "completed"


def test_a_recipient_refused_for_now_is_tried_again(app, client, auth, world, smtp):
    smtp.refuse("alice@uni.test", "450 4.2.1 mailbox busy, try again later")
    submission_id = submit_essay(client, auth, world)
    run_jobs()

    step = email_step(submission_id)
    assert step.status == "failed"
    assert step.attempts == STEP_BY_NAME["email"].max_attempts
    assert step.detail.startswith("Gave up after")
    assert "450" in step.last_error
    assert smtp.messages == []


def test_running_the_email_step_again_after_it_succeeded_sends_nothing_more(
        client, auth, world, smtp):
    submission_id = submit_essay(client, auth, world)
    run_jobs()
    assert len(smtp.messages) == 1

    # A stray copy of the job (e.g. RQ retrying a job it thinks was abandoned).
    pipeline.queue("email").enqueue("jobs.runner.run_step", submission_id, "email")
    run_jobs()
    assert email_step(submission_id).detail == "Sent to alice@uni.test"

    # A crash after the message was marked sent but before the step was: the reconciler puts
    # the step back and it runs once more.
    db.session.execute(update(StepRun).where(StepRun.submission_id == submission_id,
                                             StepRun.name == "email").values(status="pending"))
    db.session.commit()
    pipeline.enqueue_ready(db.session.get(Submission, submission_id))
    run_jobs()

    step = email_step(submission_id)
    assert (step.status, step.detail) == \
        ("succeeded", "Already sent to alice@uni.test; not sent again")
    assert len(smtp.messages) == 1
    assert len(outbox()) == 1


def test_reply_lost_after_the_server_accepted_resends_with_the_same_message_id(
        client, auth, world, smtp):
    # The remaining duplicate window, shown rather than hidden: the server took the message
    # but its reply never arrived, so the retry sends it again under the same Message-ID.
    submission_id = submit_essay(client, auth, world)
    smtp.drop_after_accept()
    run_one_job("email")
    assert email_step(submission_id).status == "retrying"
    assert outbox()[0].sent_at is None

    smtp.drop_after_accept(False)
    run_jobs()

    assert email_step(submission_id).status == "succeeded"
    first, second = smtp.messages
    assert message_id(first) == message_id(second) == outbox()[0].message_id
    assert first.get_content() == second.get_content()


@pytest.mark.skipif(os.environ.get("TEST_DATABASE") != "postgres",
                    reason="row locks: SQLite ignores FOR UPDATE")
def test_a_second_worker_on_the_same_receipt_waits_and_sends_nothing(
        app, client, auth, world, smtp):
    submission_id = submit_essay(client, auth, world)
    db.session.remove()
    details = {}

    def deliver(name):
        with app.app_context():
            details[name] = mailer.deliver_receipt(db.session.get(Submission, submission_id),
                                                   app.config)

    smtp.hold()
    first = threading.Thread(target=deliver, args=("first",))
    first.start()
    assert smtp.stalled.wait(10)
    second = threading.Thread(target=deliver, args=("second",))
    second.start()
    second.join(1.0)
    assert second.is_alive(), "the second sender should wait for the first one's row lock"
    smtp.release()
    first.join(30)
    second.join(30)

    assert details == {"first": "Sent to alice@uni.test",
                       "second": "Already sent to alice@uni.test; not sent again"}
    assert len(smtp.messages) == 1


@contextmanager
def worker_process(app, smtp, log_path):
    """`python worker.py email`, configured only through the environment, as a deployment is."""
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": app.config["REDIS_URL"],
        "STORAGE_DIR": app.config["STORAGE_DIR"],
        "SMTP_URL": smtp.url,
        "SECRET_KEY": app.config["SECRET_KEY"],
        "PUBLIC_URL": app.config["PUBLIC_URL"],
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "worker.py", "email"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("stall_at, delivered_before_rerun, rerun_detail", [
    # Killed while the server had not accepted yet: nothing went out, the re-run sends it.
    pytest.param("DATA", 0, "Sent to alice@uni.test", id="before-accepting"),
    # Killed after the server accepted, while it dawdled over QUIT: already recorded as sent.
    pytest.param("QUIT", 1, "Already sent to alice@uni.test; not sent again",
                 id="after-accepting"),
])
def test_worker_killed_mid_send_then_rerun_delivers_exactly_one_receipt(
        app, client, auth, world, smtp, runner, tmp_path,
        stall_at, delivered_before_rerun, rerun_detail):
    submission_id = submit_essay(client, auth, world)
    smtp.hold(stall_at)

    first_log = tmp_path / "first-worker.log"
    with worker_process(app, smtp, first_log) as first:
        assert smtp.stalled.wait(60), first_log.read_text()
        kill_tree(first.pid)
        first.wait(10)
    assert smtp.wait_for(lambda server: server.aborted == 1)
    smtp.release()

    step = email_step(submission_id)
    assert (step.status, step.attempts) == ("running", 1)
    assert len(smtp.messages) == delivered_before_rerun
    planned_message_id = outbox()[0].message_id

    # Its heartbeat key would lapse within worker_ttl + 60 s; the reconciler then sees it dead.
    for worker in Worker.all(connection=get_redis()):
        worker.register_death()
    result = runner.invoke(args=["reconcile"])
    assert "requeued=1" in result.output, result.output

    second_log = tmp_path / "second-worker.log"
    with worker_process(app, smtp, second_log):
        wait_until(lambda: email_step(submission_id).status == "succeeded", 60,
                   second_log.read_text)

    step = email_step(submission_id)
    assert (step.detail, step.attempts) == (rerun_detail, 2)
    assert only_submission().status == "completed"
    [message] = smtp.messages
    assert message_id(message) == planned_message_id


@pytest.mark.slow
def test_sigterm_to_every_worker_process_lets_the_receipt_being_sent_finish(
        app, client, auth, world, smtp, tmp_path):
    # A dyno stop signals every process of the worker at once, whatever its process group.
    submission_id = submit_essay(client, auth, world)
    smtp.hold("DATA")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "worker.py", "email"], cwd=ROOT,
                                  env=process_env(app, SMTP_URL=smtp.url), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert smtp.stalled.wait(60), log_path.read_text()
        for pid in [worker.pid, *descendants(worker.pid)]:
            os.kill(pid, signal.SIGTERM)
        time.sleep(2)  # well inside a stop's grace period, and past RQ's one-second echo
        assert worker.poll() is None, log_path.read_text()
        smtp.release()
        assert worker.wait(30) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            kill_tree(worker.pid)
            worker.wait(10)

    step = email_step(submission_id)
    assert (step.status, step.attempts) == ("succeeded", 1), step.detail
    assert step.detail == "Sent to alice@uni.test"
    assert len(smtp.messages) == 1
    assert only_submission().status == "completed"
    assert Worker.all(connection=get_redis()) == []
