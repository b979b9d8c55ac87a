import io
import os
import re
import signal
import time
from contextlib import contextmanager

from app.extensions import db
from app.models import Event, Submission
from tests.conftest import csrf_from


def upload_form(client, assignment_id, content, filename, key=None):
    """Submit through the assignment page's form, as a browser would."""
    page = client.get(f"/assignments/{assignment_id}").get_data(as_text=True)
    found = re.search(r'name="idempotency_key"[^>]*value="([^"]*)"', page)
    return client.post(
        f"/assignments/{assignment_id}",
        data={"csrf_token": csrf_from(page),
              "idempotency_key": key or (found.group(1) if found else ""),
              "file": (io.BytesIO(content), filename)},
        content_type="multipart/form-data",
    )


def upload_api(client, headers, assignment_id, content, filename, key=None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/api/v1/assignments/{assignment_id}/submissions",
        data={"file": (io.BytesIO(content), filename)},
        headers={**headers, **extra}, content_type="multipart/form-data",
    )


def logged_in(app, email):
    from tests.conftest import Auth

    viewer = app.test_client()
    Auth(viewer).login(email)
    return viewer


def fetch(viewer, url):
    # send_file streams from an open file; reading and closing here keeps it from leaking.
    with viewer.get(url) as response:
        response.get_data()
    return response


def wait_until(predicate, seconds=5, message=None, interval=0.2):
    """Poll `predicate` until it returns something true, and return that; fail after `seconds`
    with `message` (called then if callable, so a log it shows is up to date)."""
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f"still not true after {seconds} s")
        time.sleep(interval)


def alice_essay_submission(world):
    """A committed PDF submission of alice's to the essay, its steps pending: for a page or
    stream test that records the steps' outcomes itself."""
    from app.pipeline import create_steps

    submission = Submission(
        assignment=world.essay, student=world.users["alice"], filename="essay.pdf",
        content_type="application/pdf", size=5, sha256="0" * 64, status="received",
    )
    create_steps(submission)
    db.session.add(submission)
    db.session.commit()
    return submission


def only_submission():
    return db.session.execute(db.select(Submission)).scalar_one()


def submission_count():
    return db.session.query(Submission).count()


def trail(submission_id):
    """The event trail of a submission as (type, step or '', status) tuples, in id order."""
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id).order_by(Event.id)
    ).scalars()
    return [(e.type, e.payload.get("step", ""), e.payload["status"]) for e in events]


def descendants(pid):
    """Every process below `pid` (RQ's work horse runs in a session of its own)."""
    from pathlib import Path

    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid):
    """SIGKILL a process and everything it started, as a crashed machine would."""
    for victim in [pid, *descendants(pid)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def paused(process):
    """A server hung (SIGSTOP): connections open and commands are taken, but nothing answers
    until the block ends, which continues it (SIGCONT) whatever happened inside."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)
