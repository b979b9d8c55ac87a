"""Scheduled grade release through the real processes: `flask run-scheduler` moves the job when
it is due, `python worker.py` runs it, and the student sees the grade only then."""

import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.extensions import db, get_redis
from app.models import Assignment, utcnow
from tests.conftest import ROOT, process_env
from tests.helpers import wait_until
from tests.smtp import SmtpServer
from tests.test_grades import release_state, scheduled_job_ids, submission_for

pytestmark = pytest.mark.slow


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def ids(world):
    return type("Ids", (), {"essay": world.essay.id, "sketch": world.sketch.id})


@contextmanager
def process(app, log_path, *argv, **env):
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=process_env(app, **env),
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)


@contextmanager
def scheduler_and_worker(app, tmp_path, smtp_url):
    with ExitStack() as stack:
        stack.enter_context(process(app, tmp_path / "scheduler.log", "-m", "flask", "--app",
                                    "wsgi", "run-scheduler", "--interval", "1"))
        stack.enter_context(process(app, tmp_path / "worker.log", "worker.py", "grades",
                                    "email", SMTP_URL=smtp_url))
        yield


def grade_seen_by(client, headers, submission_id):
    db.session.remove()
    return client.get(f"/api/v1/submissions/{submission_id}", headers=headers).get_json()["grade"]


def mark(client, headers, submission_id, score):
    response = client.put(f"/api/v1/submissions/{submission_id}/grade", headers=headers,
                          json={"score": score, "feedback": "See comments"})
    assert response.status_code == 200


def schedule(client, headers, assignment_id, at):
    response = client.post(f"/api/v1/assignments/{assignment_id}/release", headers=headers,
                           json={"at": at.isoformat()})
    assert response.status_code == 202, response.get_json()


def test_scheduled_release_fires_at_its_new_time_through_scheduler_and_worker(
        app, client, auth, world, ids, smtp, tmp_path):
    alice_sub = submission_for(world, "alice")
    sam, alice = auth.token("sam@uni.test"), auth.token("alice@uni.test")
    mark(client, sam, alice_sub, 42)
    with scheduler_and_worker(app, tmp_path, smtp.url):
        first = utcnow().replace(microsecond=0) + timedelta(seconds=4)
        schedule(client, sam, ids.essay, first)
        moved = first + timedelta(seconds=4)
        schedule(client, sam, ids.essay, moved)
        assert grade_seen_by(client, alice, alice_sub) is None
        # The first time passes: its job was replaced, so nothing happens.
        while utcnow() < first + timedelta(seconds=2.5):
            assert grade_seen_by(client, alice, alice_sub) is None
            time.sleep(0.2)
        wait_until(lambda: grade_seen_by(client, alice, alice_sub) is not None, 30,
                   "the scheduled release did not fire")
        assert grade_seen_by(client, alice, alice_sub)["score"] == 42
        assert release_state(ids.essay).released_at >= moved
        assert smtp.wait_for(lambda s: len(s.messages) == 1, 20), "no grade email"
    assert smtp.messages[0]["To"] == "alice@uni.test"
    assert "42 / 50" in smtp.messages[0].get_content()


def test_cancelled_schedule_does_not_fire(app, client, auth, world, ids, smtp, tmp_path):
    alice_sub = submission_for(world, "alice")
    carol_sub = submission_for(world, "carol", assignment=world.sketch)
    sam, tess = auth.token("sam@uni.test"), auth.token("tess@uni.test")
    alice, carol = auth.token("alice@uni.test"), auth.token("carol@uni.test")
    mark(client, sam, alice_sub, 40)
    mark(client, tess, carol_sub, 90)
    with scheduler_and_worker(app, tmp_path, smtp.url):
        at = utcnow().replace(microsecond=0) + timedelta(seconds=4)
        schedule(client, sam, ids.essay, at)
        schedule(client, tess, ids.sketch, at)  # fires, so we know the scheduler ran
        cancelled = client.delete(f"/api/v1/assignments/{ids.essay}/release", headers=sam)
        assert cancelled.get_json()["state"] == "unscheduled"
        wait_until(lambda: grade_seen_by(client, carol, carol_sub) is not None, 30,
                   "the control release did not fire")
        time.sleep(2.5)
        assert grade_seen_by(client, alice, alice_sub) is None
    assert release_state(ids.essay).released_at is None
    assert [m["To"] for m in smtp.messages] == ["carol@uni.test"]


def test_reconciler_restores_releases_that_redis_lost(app, client, auth, world, ids, smtp,
                                                      tmp_path):
    alice_sub = submission_for(world, "alice")
    carol_sub = submission_for(world, "carol", assignment=world.sketch)
    sam, tess = auth.token("sam@uni.test"), auth.token("tess@uni.test")
    alice, carol = auth.token("alice@uni.test"), auth.token("carol@uni.test")
    mark(client, sam, alice_sub, 33)
    mark(client, tess, carol_sub, 77)
    at = utcnow().replace(microsecond=0) + timedelta(seconds=8)
    schedule(client, sam, ids.essay, at)
    schedule(client, tess, ids.sketch, at + timedelta(hours=1))
    # The sketch's time came and went while its job was lost: it must go out at once.
    db.session.execute(update(Assignment).where(Assignment.id == ids.sketch)
                       .values(release_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    get_redis().flushdb()  # Redis restarted empty
    assert scheduled_job_ids() == []

    reconciled = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "reconcile"], cwd=ROOT,
        env=process_env(app), capture_output=True, text=True, timeout=60)
    assert reconciled.returncode == 0, reconciled.stderr
    essay = release_state(ids.essay)
    assert essay.release_at == at and scheduled_job_ids() == [essay.release_job_id]
    assert grade_seen_by(client, alice, alice_sub) is None

    with scheduler_and_worker(app, tmp_path, smtp.url):
        wait_until(lambda: grade_seen_by(client, carol, carol_sub) is not None, 30,
                   "the overdue release was not restored")
        # Not early (on a slow machine the 8 s may be over by now: the last line checks it too).
        asked_at = utcnow()
        if grade_seen_by(client, alice, alice_sub) is not None:
            assert asked_at >= at - timedelta(seconds=1), "released before its time"
        wait_until(lambda: grade_seen_by(client, alice, alice_sub) is not None, 40,
                   "the restored schedule did not fire")
    assert release_state(ids.essay).released_at >= at
