import functools
import os
import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import g
from flask.testing import FlaskClient
from flask_migrate import upgrade
from rq import SimpleWorker
from werkzeug.security import generate_password_hash

os.environ["APP_ENV"] = "testing"

from app import create_app  # noqa: E402
from app.events.hub import stop_hub  # noqa: E402
from app.extensions import db, get_redis  # noqa: E402
from app.models import Assignment, Course, Enrollment, User, utcnow  # noqa: E402
from app.steps import QUEUES  # noqa: E402
from jobs.runner import serving  # noqa: E402
from tests.services import RedisServer, postgres_admin_url  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def pytest_report_header(config):
    return f"database backend: {os.environ.get('TEST_DATABASE', 'sqlite')}"


# What a test using each fixture must be marked, so `-m "not slow"` or `-m browser` finds it:
# a real Chromium, a fault scenario, a Redis or PostgreSQL stopped under running processes.
MARKS_REQUIRED_BY = {"chromium": {"slow", "browser"}, "fault_run": {"slow"},
                     "own_redis": {"slow"}, "cluster": {"slow"}}


def pytest_collection_modifyitems(config, items):
    unmarked = []
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        for fixture, required in MARKS_REQUIRED_BY.items():
            if fixture in item.fixturenames and not required <= marks:
                unmarked.append(f"{item.nodeid} uses {fixture}: mark it "
                                + ", ".join(sorted(required - marks)))
    if unmarked:
        raise pytest.UsageError("\n".join(unmarked))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    if os.environ.get("TEST_DATABASE") != "postgres":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    admin_url = postgres_admin_url()
    name = f"submissions_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated(database_url, redis_server, tmp_path_factory):
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_server.url,
                      "MIGRATIONS_DIR": str(ROOT / "migrations")})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()
    return database_url


def app_settings(database_url, redis_url, tmp_path):
    """What a test's app is created with: its database, Redis and a storage folder of its own."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "STORAGE_DIR": str(tmp_path / "storage"),
        "SECRET_KEY": "test-secret",
        "PUBLIC_URL": "http://submissions.test",
        "MIGRATIONS_DIR": str(ROOT / "migrations"),
    }


@pytest.fixture
def app(migrated, redis_server, tmp_path):
    app = create_app(app_settings(migrated, redis_server.url, tmp_path))
    app.test_client_class = Client
    with app.app_context():
        get_redis().flushdb()
        # Emptied before each test, not after too: every test that reads them starts here.
        _empty_tables()
        yield app
        stop_hub()
        db.session.remove()
        db.engine.dispose()


def _empty_tables():
    db.session.remove()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


class Client(FlaskClient):
    """The test keeps an app context open, which Flask reuses for each request; clear its `g`
    so nothing (such as the logged-in user) leaks from one request into the next."""

    def open(self, *args, **kwargs):
        for name in list(g):
            g.pop(name)
        self._sent_bodies = []
        try:
            return super().open(*args, **kwargs)
        finally:
            # Werkzeug spools a large test body to a temporary file that nothing closes.
            for body in self._sent_bodies:
                body.close()

    def _request_from_builder_args(self, args, kwargs):
        request = super()._request_from_builder_args(args, kwargs)
        self._sent_bodies.append(request.environ["wsgi.input"])
        return request


@pytest.fixture
def private_redis(app, tmp_path):
    """A Redis of this test's own, which it may stop or hang; the app and the processes it
    starts use it."""
    server = RedisServer(tmp_path / "redis").start()
    app.config["REDIS_URL"] = server.url
    app.extensions.pop("submissions_redis").close()
    yield server
    server.stop()


LIVE_HEARTBEAT = 0.2  # seconds between heartbeats on a test's event streams


@pytest.fixture
def live_events(app):
    """Event streams quick enough for a test to watch: a heartbeat every LIVE_HEARTBEAT seconds,
    and half a second's wait for an event id that arrives out of order."""
    app.config.update(SSE_HEARTBEAT_SECONDS=LIVE_HEARTBEAT, SSE_GAP_WAIT_SECONDS=0.5)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_from(html):
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


class Auth:
    def __init__(self, client):
        self.client = client

    def login(self, email, password=PASSWORD):
        page = self.client.get("/login").get_data(as_text=True)
        return self.client.post("/login", data={
            "email": email, "password": password, "csrf_token": csrf_from(page)})

    def token(self, email, password=PASSWORD):
        response = self.client.post("/api/v1/tokens", json={"email": email, "password": password})
        assert response.status_code == 201, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['token']}"}


@pytest.fixture
def auth(client):
    return Auth(client)


@functools.cache
def password_hash():
    """PASSWORD hashed once a session, with scrypt at 1/32 of the app's work factor: each login
    still checks it for real, in 4 ms instead of the fifth of a second a real user waits."""
    return generate_password_hash(PASSWORD, method="scrypt:1024:8:1")


def make_user(email, role="student", name=""):
    user = User(email=email, role=role, name=name, password_hash=password_hash())
    db.session.add(user)
    return user


@pytest.fixture
def world(app):
    """CS101: students alice and bob, staff sam. ART200: student carol, staff tess."""
    from datetime import timedelta

    now = utcnow()
    cs = Course(code="CS101", title="Programming", timezone="Europe/London")
    art = Course(code="ART200", title="Drawing", timezone="America/New_York")
    users = {name: make_user(f"{name}@uni.test", role, name.title()) for name, role in [
        ("alice", "student"), ("bob", "student"), ("carol", "student"),
        ("sam", "staff"), ("tess", "staff"), ("root", "admin")]}
    for name, course, role in [("alice", cs, "student"), ("bob", cs, "student"),
                               ("sam", cs, "staff"), ("carol", art, "student"),
                               ("tess", art, "staff")]:
        db.session.add(Enrollment(user=users[name], course=course, role=role))
    essay = Assignment(course=cs, title="Essay", due_at=now + timedelta(days=1),
                       cutoff_at=now + timedelta(days=2),
                       allowed_types="pdf,txt,py,png,jpg,zip,docx", max_size_mb=2, max_score=50)
    sketch = Assignment(course=art, title="Sketch", due_at=now + timedelta(days=1),
                        allowed_types="png,jpg,pdf", max_size_mb=5)
    db.session.add_all([cs, art, essay, sketch])
    db.session.commit()
    return type("World", (), {"users": users, "essay": essay, "sketch": sketch, "cs": cs,
                              "art": art})


def run_jobs(queues=QUEUES):
    """Process every queued job in this process, as a worker would, until the queues are empty."""
    worker = SimpleWorker(list(queues), connection=get_redis())
    # As worker.py does: a step runs on in the job that made it ready where this worker
    # serves its queue.
    with serving(queues):
        worker.work(burst=True, logging_level="WARNING")
    db.session.remove()


def process_env(app, **extra):
    """Environment for a subprocess (worker, web, CLI) that must share this test's app state."""
    env = dict(os.environ)
    env.update({
        "APP_ENV": "testing",
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": app.config["REDIS_URL"],
        "STORAGE_DIR": app.config["STORAGE_DIR"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "PUBLIC_URL": app.config["PUBLIC_URL"],
        "PYTHONUNBUFFERED": "1",
        **{key: str(value) for key, value in extra.items()},
    })
    return env
