"""How long a grade release takes to reach 1,000 students who have their submission page open.

Starts a private Redis, gunicorn with the gevent worker (as the Procfile runs it) and one
`worker.py grades`, seeds one assignment with N graded students, opens N event streams (one per
student, on `submission.<id>` with that student's token), then releases the grades through the
API and times, per stream, the arrival of its `grade` event. The goal is under 2 s for 1,000.

Run from the repository root: python -m bench.grade_release [--students 1000] [--postgres]
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import requests
import sqlalchemy as sa
from flask_migrate import upgrade
from werkzeug.security import generate_password_hash

from tests.services import RedisServer, free_port, postgres_admin_url

ROOT = Path(__file__).resolve().parent.parent
CONNECTS_AT_ONCE = 50
SETTLE_SECONDS = 1.0


def seed(students):
    """One course, one assignment, N students each with a graded submission and an API token."""
    from app.extensions import db
    from app.models import (
        ApiToken,
        Assignment,
        Course,
        Enrollment,
        Grade,
        Submission,
        User,
        utcnow,
    )

    now = utcnow()
    password_hash = generate_password_hash(uuid.uuid4().hex)  # nobody logs in with it
    course = Course(code="BENCH", title="Release benchmark", timezone="UTC")
    assignment = Assignment(course=course, title="Essay", due_at=now - timedelta(days=1),
                            max_score=100)
    staff = User(email="marker@bench.test", name="Marker", role="staff",
                 password_hash=password_hash)
    db.session.add_all([course, assignment, staff, Enrollment(user=staff, course=course,
                                                              role="staff")])
    users = [User(email=f"student{i}@bench.test", name=f"Student {i}", role="student",
                  password_hash=password_hash) for i in range(students)]
    db.session.add_all(users)
    db.session.add_all(Enrollment(user=user, course=course, role="student") for user in users)
    submissions = [
        Submission(assignment=assignment, student=user, filename="essay.txt",
                   content_type="text/plain", size=10, sha256="0" * 64, status="completed",
                   received_at=now - timedelta(hours=2))
        for user in users
    ]
    db.session.add_all(submissions)
    db.session.flush()
    db.session.add_all(Grade(submission_id=s.id, score=50 + s.id % 50, feedback="Well argued.",
                             marker_id=staff.id) for s in submissions)
    staff_token = ApiToken.issue(staff)
    streams = [(submission.id, ApiToken.issue(user)) for submission, user in
               zip(submissions, users, strict=True)]
    db.session.commit()
    return assignment.id, staff_token, streams


async def follow(port, submission_id, token, gate, opened, arrivals):
    """Hold one student's event stream open; note when its grade event arrives."""
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((
            f"GET /events?topic=submission.{submission_id} HTTP/1.0\r\n"
            f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"stream for submission {submission_id} answered {status}")
    opened.append(submission_id)
    buffer = ""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"stream for submission {submission_id} closed")
            buffer += chunk.decode()
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                fields = {}
                for line in block.split("\n"):
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
                if fields.get("event") != "grade":
                    continue
                if json.loads(fields["data"])["submission_id"] == submission_id:
                    arrivals[submission_id] = time.perf_counter()
                    return
    finally:
        writer.close()


def percentile(sorted_values, fraction):
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


async def measure(port, assignment_id, staff_token, streams, timeout):
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    opened, arrivals = [], {}
    tasks = [asyncio.create_task(follow(port, sid, token, gate, opened, arrivals))
             for sid, token in streams]
    started = time.perf_counter()
    while len(opened) < len(streams):
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"only {len(opened)} of {len(streams)} streams opened")
        await asyncio.sleep(0.05)
    connect_seconds = time.perf_counter() - started
    # Every stream is subscribed once its headers are out; let the hubs settle before timing.
    await asyncio.sleep(SETTLE_SECONDS)

    released = time.perf_counter()
    response = await asyncio.to_thread(
        requests.post, f"http://127.0.0.1:{port}/api/v1/assignments/{assignment_id}/release",
        headers={"Authorization": f"Bearer {staff_token}"}, timeout=30)
    answered = time.perf_counter()
    if response.status_code != 202:
        raise RuntimeError(f"release answered {response.status_code}: {response.text}")
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    latencies = sorted(arrival - released for arrival in arrivals.values())
    return connect_seconds, answered - released, latencies


class Processes:
    def __init__(self, workdir, env):
        self.workdir = workdir
        self.env = env
        self.children = []

    def start(self, name, command):
        log = open(self.workdir / f"{name}.log", "wb")
        child = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append((name, child, log))
        return child

    def stop(self):
        for _, child, log in reversed(self.children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGINT)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait(5)
            log.close()


def wait_for_web(port, child, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError("gunicorn exited; see its log")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer")


def create_postgres_database():
    admin_url = postgres_admin_url()
    name = f"submissions_bench_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def run(students, postgres, web_workers, timeout, keep):
    workdir = Path(tempfile.mkdtemp(prefix="bench-release-"))
    redis = RedisServer(workdir / "redis").start()
    database_url, drop_database = (create_postgres_database() if postgres else
                                   (f"sqlite:///{workdir / 'bench.db'}", lambda: None))
    port = free_port()
    env = {**os.environ, "APP_ENV": "development", "DATABASE_URL": database_url,
           "REDIS_URL": redis.url, "STORAGE_DIR": str(workdir / "storage"),
           "SECRET_KEY": uuid.uuid4().hex, "PORT": str(port),
           "WEB_CONCURRENCY": str(web_workers), "PYTHONUNBUFFERED": "1"}
    processes = Processes(workdir, env)
    try:
        from app import create_app
        from app.extensions import db

        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis.url})
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
            assignment_id, staff_token, streams = seed(students)
            db.engine.dispose()
        web = processes.start("web", [sys.executable, "-m", "gunicorn", "--config",
                                      "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                                      "--access-logfile", "/dev/null", "wsgi:app"])
        processes.start("worker", [sys.executable, "worker.py", "grades"])
        wait_for_web(port, web)
        connect, answered, latencies = asyncio.run(
            measure(port, assignment_id, staff_token, streams, timeout))
    finally:
        processes.stop()
        redis.stop()
        drop_database()
        if keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return connect, answered, latencies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true",
                        help="use a throwaway database on the local PostgreSQL server")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="100 students")
    parser.add_argument("--keep", action="store_true", help="keep the process logs")
    args = parser.parse_args(argv)
    students = 100 if args.quick else args.students
    connect, answered, latencies = run(students, args.postgres, args.web_workers, args.timeout,
                                         args.keep)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"grade release to {students} open event streams "
          f"({backend}, gunicorn gevent x{args.web_workers}, one grades worker)")
    print(f"  streams opened in            {connect:8.2f} s")
    print(f"  release request answered in  {answered * 1000:8.0f} ms")
    if not latencies:
        print("  no stream received its grade event")
        return 1
    print(f"  grade events received        {len(latencies):8d} of {students}")
    print(f"  first                        {latencies[0] * 1000:8.0f} ms")
    print(f"  p50                          {percentile(latencies, 0.50) * 1000:8.0f} ms")
    print(f"  p99                          {percentile(latencies, 0.99) * 1000:8.0f} ms")
    print(f"  max (every stream served)    {latencies[-1] * 1000:8.0f} ms  (goal: under 2000)")
    return 0 if len(latencies) == students else 1


if __name__ == "__main__":
    sys.exit(main())
