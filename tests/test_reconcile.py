import http.server
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from app.extensions import db, get_redis
from app.models import OutboxEmail, Submission, utcnow
from app.pipeline import queue
from jobs.maintenance import job_is_dead, reconcile, schedule_periodic, scheduler_for
from tests.conftest import ROOT, process_env, run_jobs
from tests.helpers import kill_tree, trail, upload_api
from tests.smtp import SmtpServer
from tests.test_email import run_one_job
from tests.test_grades import submission_for

ESSAY = b"Reconciled essay.\n"


@pytest.fixture
def now_is_late(app):
    app.config["RECONCILE_GRACE_SECONDS"] = 0


def status(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id)


def upload(client, auth, world, n=1):
    headers = auth.token("alice@uni.test")
    return [upload_api(client, headers, world.essay.id, ESSAY + bytes([65 + i]), "e.txt")
            .get_json()["id"] for i in range(n)]


def test_redis_flushed_mid_run_every_submission_still_completes(app, client, auth, world,
                                                                now_is_late):
    ids = upload(client, auth, world, 3)
    from rq import SimpleWorker

    SimpleWorker([queue("scan")], connection=get_redis()).work(burst=True)
    get_redis().flushdb()
    summary = reconcile()
    assert summary["requeued"] == 3  # each store step was queued in the lost Redis
    run_jobs()
    for submission_id in ids:
        submission = status(submission_id)
        assert submission.status == "completed"
        steps = [(name, state) for kind, name, state in trail(submission_id) if kind == "step"]
        assert steps.count(("store", "succeeded")) == 1
        assert trail(submission_id)[-1] == ("submission", "", "completed")


def test_reconcile_leaves_live_jobs_alone_and_is_safe_to_repeat(app, client, auth, world,
                                                                  now_is_late):
    upload(client, auth, world, 2)
    assert reconcile()["requeued"] == 0  # both scan jobs are waiting in Redis
    assert queue("scan").count == 2
    run_jobs()
    assert reconcile() == {"checked": 0, "requeued": 0, "enqueued": 0, "completed": 0,
                           "emails_requeued": 0, "messages_requeued": 0,
                           "releases_restored": 0}


def test_recently_queued_step_is_given_time_to_reach_redis(app, client, auth, world):
    app.config["RECONCILE_GRACE_SECONDS"] = 60
    [submission_id] = upload(client, auth, world)
    get_redis().flushdb()
    assert reconcile()["requeued"] == 0
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    assert reconcile()["requeued"] == 1
    run_jobs()
    assert status(submission_id).status == "completed"


def test_retry_left_unfiled_by_a_killed_worker_is_requeued(app, client, auth, world, smtp,
                                                          now_is_late):
    app.config["RETRY_BACKOFF_SCALE"] = 1.0  # retries wait their turn in RQ's registry
    [submission_id] = upload(client, auth, world)
    run_jobs(["scan", "store", "external", "media"])
    run_one_job("email")  # the mail server is down: the step waits to retry
    step = status(submission_id).step("email")
    assert step.status == "retrying"
    retry = Job.fetch(step.job_id, connection=get_redis())
    assert retry.get_status() == JobStatus.SCHEDULED
    assert reconcile()["requeued"] == 0
    # A reconciler whose snapshot of Redis was taken just before the retry was filed reads
    # the job again before it calls it dead.
    assert not job_is_dead(get_redis(), retry, set(), set(), utcnow(), timedelta(seconds=35))

    # A worker killed between RQ marking the job scheduled and filing it leaves it so.
    ScheduledJobRegistry(queue=queue("email")).remove(retry)
    assert job_is_dead(get_redis(), retry, set(), set(), utcnow(), timedelta(seconds=35))
    assert retry.get_status() == JobStatus.SCHEDULED
    assert reconcile()["requeued"] == 1
    smtp.start()
    run_jobs()
    assert status(submission_id).status == "completed"
    assert len(smtp.messages) == 1


def test_reconcilers_racing_requeue_each_lost_step_once(app, client, auth, world):
    from datetime import timedelta

    from sqlalchemy import update

    from app.models import StepRun, utcnow

    ids = upload(client, auth, world, 4)
    # Queued an hour ago and lost since: past the grace any reconciler gives a fresh step.
    db.session.execute(update(StepRun).where(StepRun.status == "queued")
                       .values(queued_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    get_redis().flushdb()
    script = ("from app import create_app\nfrom jobs.maintenance import reconcile\n"
              "app = create_app()\n"
              "with app.app_context(): print(reconcile()['requeued'])\n")
    racers = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=process_env(app),
                               stdout=subprocess.PIPE, text=True) for _ in range(3)]
    requeued = sum(int(r.communicate(timeout=60)[0].strip().splitlines()[-1]) for r in racers)
    assert requeued == 4
    assert queue("scan").count == 4
    run_jobs()
    assert all(status(i).status == "completed" for i in ids)


def test_scheduler_puts_its_periodic_jobs_back_after_a_flush(app):
    scheduler = scheduler_for()
    schedule_periodic(scheduler)
    assert "periodic-reconcile" in scheduler
    get_redis().flushdb()
    assert "periodic-reconcile" not in scheduler
    scheduler.enqueue_jobs()
    assert "periodic-reconcile" in scheduler
    assert queue("maintenance").count >= 1  # and it is due now


class StallingRecords(http.server.BaseHTTPRequestHandler):
    """A student-records endpoint that hangs until told to answer."""

    release = threading.Event()
    arrived = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        StallingRecords.arrived.set()
        StallingRecords.release.wait(30)
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "rec-1"}')

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_worker_killed_mid_step_is_noticed_from_heartbeats_and_the_step_rerun(
        app, client, auth, world, now_is_late):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StallingRecords)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StallingRecords.release.clear()
    StallingRecords.arrived.clear()
    url = f"http://127.0.0.1:{server.server_port}/records"
    app.config.update(ADMIN_SYNC_URL=url, ADMIN_SYNC_SECRET="s3cret",
                      WORKER_DEAD_AFTER_SECONDS=3)
    env = process_env(app, ADMIN_SYNC_URL=url, ADMIN_SYNC_SECRET="s3cret")
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        [submission_id] = upload(client, auth, world)
        assert StallingRecords.arrived.wait(60), "the worker never reached the records step"
        kill_tree(worker.pid)
        worker.wait(10)
        assert reconcile()["requeued"] == 0  # its heartbeat is still fresh
        time.sleep(4)
        assert reconcile()["requeued"] == 1
        StallingRecords.release.set()
        run_jobs()
    finally:
        StallingRecords.release.set()
        if worker.poll() is None:
            worker.kill()
        server.shutdown()
        server.server_close()
    submission = status(submission_id)
    assert submission.status == "completed"
    assert submission.step("admin_sync").status == "succeeded"
    states = [s for _, name, s in trail(submission_id) if name == "admin_sync"]
    assert states.count("running") == 2 and states[-1] == "succeeded"


@pytest.fixture
def smtp(app):
    """The mail server, not yet started: each test says when it answers."""
    server = SmtpServer()
    app.config["SMTP_URL"] = server.url
    yield server
    server.stop()


def release_marked(client, auth, world, *students):
    """Sam marks each student's essay and releases the grades; the release job runs."""
    ids = [submission_for(world, student) for student in students]
    headers = auth.token("sam@uni.test")
    for submission_id in ids:
        client.put(f"/api/v1/submissions/{submission_id}/grade", headers=headers,
                   json={"score": 40})
    client.post(f"/api/v1/assignments/{world.essay.id}/release", headers=headers)
    run_jobs(["grades"])
    return ids


def grade_emails(smtp):
    return sorted((m["To"], str(m["Subject"])) for m in smtp.messages)


def unsent_rows():
    db.session.remove()
    return db.session.query(OutboxEmail).filter(OutboxEmail.sent_at.is_(None)).count()


def test_grade_email_whose_job_redis_lost_is_sent_once_by_the_reconciler(
        app, client, auth, world, smtp, now_is_late):
    smtp.start()
    release_marked(client, auth, world, "alice")
    get_redis().flushdb()  # the email job goes before any worker took it

    assert reconcile()["emails_requeued"] == 1
    run_jobs()
    assert grade_emails(smtp) == [("alice@uni.test", "Grade: CS101 Essay")]

    assert reconcile()["emails_requeued"] == 0
    run_jobs()
    assert len(smtp.messages) == 1


def test_grade_email_whose_retries_ran_out_while_smtp_was_down_is_sent_once_after_reconcile(
        app, client, auth, world, smtp):
    release_marked(client, auth, world, "alice", "bob")
    run_jobs(["email"])  # every attempt finds the mail server down
    assert unsent_rows() == 2
    assert smtp.messages == []

    smtp.start()
    app.config["RECONCILE_GRACE_SECONDS"] = 600
    assert reconcile()["emails_requeued"] == 0  # released moments ago: not overdue yet
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    assert reconcile()["emails_requeued"] == 0  # gave up moments ago: staff see it first
    app.config["EMAIL_RETRY_AFTER_FAILURE_SECONDS"] = 0
    assert reconcile()["emails_requeued"] == 2
    run_jobs()
    assert grade_emails(smtp) == [("alice@uni.test", "Grade: CS101 Essay"),
                                  ("bob@uni.test", "Grade: CS101 Essay")]
    assert unsent_rows() == 0

    assert reconcile()["emails_requeued"] == 0
    run_jobs()
    assert len(smtp.messages) == 2


def test_receipt_whose_retries_ran_out_is_sent_once_and_the_submission_completes(
        app, client, auth, world, smtp, now_is_late):
    [submission_id] = upload(client, auth, world)
    run_jobs()
    submission = status(submission_id)
    assert (submission.status, submission.step("email").status) == ("needs_attention", "failed")

    smtp.start()
    # Staff see it needing attention for a while first.
    assert reconcile()["emails_requeued"] == 0
    assert status(submission_id).status == "needs_attention"

    app.config["EMAIL_RETRY_AFTER_FAILURE_SECONDS"] = 0
    assert reconcile()["emails_requeued"] == 1
    run_jobs()
    submission = status(submission_id)
    assert (submission.status, submission.step("email").status) == ("completed", "succeeded")
    [receipt] = smtp.messages
    assert receipt["Subject"] == f"Receipt: CS101 Essay (#{submission_id})"

    assert reconcile()["emails_requeued"] == 0
    run_jobs()
    assert len(smtp.messages) == 1


def test_reconcilers_racing_put_each_unsent_grade_email_back_once(
        app, client, auth, world, smtp, now_is_late):
    smtp.start()
    release_marked(client, auth, world, "alice", "bob")
    get_redis().flushdb()
    script = ("from app import create_app\nfrom jobs.maintenance import reconcile\n"
              "app = create_app()\n"
              "with app.app_context(): print(reconcile()['emails_requeued'])\n")
    env = process_env(app, SMTP_URL=smtp.url, RECONCILE_GRACE_SECONDS=0)
    racers = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True) for _ in range(3)]
    requeued = sum(int(r.communicate(timeout=60)[0].strip().splitlines()[-1]) for r in racers)
    assert requeued == 2
    assert queue("email").count == 2
    run_jobs()
    assert grade_emails(smtp) == [("alice@uni.test", "Grade: CS101 Essay"),
                                  ("bob@uni.test", "Grade: CS101 Essay")]
