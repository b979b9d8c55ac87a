"""One receipt even when PostgreSQL restarts the moment the SMTP server accepts it: the mailer's
record of the acceptance outlives the lost commit. Each test runs against a private cluster it
may stop, never the shared server."""

import asyncio
import os
import threading

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app.events.hub import stop_hub
from app.extensions import db, get_redis
from app.services import mailer
from scripts.postgres_local import _bin
from tests.conftest import ROOT, Client, app_settings
from tests.faults.stack import PostgresCluster
from tests.helpers import only_submission
from tests.smtp import SmtpServer
from tests.test_email import email_step, message_id, outbox, run_one_job, submit_essay


def postgres_installed():
    try:
        _bin("initdb")
        _bin("pg_ctl")
    except SystemExit:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    # A private cluster whatever the pass: it runs once, in the PostgreSQL pass.
    pytest.mark.skipif(os.environ.get("TEST_DATABASE") != "postgres",
                       reason="a private PostgreSQL cluster; the PostgreSQL pass runs it"),
    pytest.mark.skipif(not postgres_installed(),
                       reason="needs the PostgreSQL server binaries (initdb, pg_ctl)"),
]


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.remove()


@pytest.fixture
def app(cluster, redis_server, tmp_path, request):
    """The suite's app, on a fresh database in the private cluster."""
    name = f"restart_{request.node.name.removeprefix('test_')[:40]}"
    admin = sa.create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    app = create_app(app_settings(cluster.url(name), redis_server.url, tmp_path))
    app.test_client_class = Client
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        get_redis().flushdb()
        yield app
        stop_hub()
        db.session.remove()
        db.engine.dispose()


class RestartingSmtpServer(SmtpServer):
    """Stops the database as it accepts its first message, and starts it `down_for` s later."""

    def __init__(self, cluster, down_for):
        super().__init__()
        self.cluster = cluster
        self.down_for = down_for
        self.restart = None

    async def handle_DATA(self, server, session, envelope):
        if self.restart is None:
            self.restart = threading.Timer(self.down_for, self.cluster.start)
            await asyncio.to_thread(self.cluster.stop)
            self.restart.start()
        return await super().handle_DATA(server, session, envelope)

    def wait_for_database(self):
        self.restart.join(90)
        assert self.cluster.running


@pytest.fixture
def restarting_smtp(app, cluster):
    def start(down_for):
        server = RestartingSmtpServer(cluster, down_for).start()
        app.config["SMTP_URL"] = server.url
        servers.append(server)
        return server

    servers = []
    yield start
    for server in servers:
        server.stop()
        if server.restart is not None:
            server.restart.join(90)
    if not cluster.running:
        cluster.start()


def assert_one_receipt(smtp, submission_id, detail, attempts):
    """The student got one message, the outbox row says so, and the submission is done."""
    [row] = outbox()
    assert (row.transport, row.sent_at is not None) == ("smtp", True)
    [message] = smtp.messages
    assert message_id(message) == row.message_id
    step = email_step(submission_id)
    assert (step.status, step.detail, step.attempts) == ("succeeded", detail, attempts)
    assert only_submission().status == "completed"


def test_database_restarted_as_the_server_accepts_the_receipt_sends_it_once(
        client, auth, world, restarting_smtp):
    smtp = restarting_smtp(down_for=3)
    submission_id = submit_essay(client, auth, world)

    run_one_job("email")
    smtp.wait_for_database()
    # Anything left to retry runs now that the database is back.
    run_one_job("email")

    assert_one_receipt(smtp, submission_id, "Sent to alice@uni.test", attempts=1)


def test_database_away_longer_than_the_mailer_waits_the_rerun_sends_nothing_more(
        client, auth, world, restarting_smtp, monkeypatch):
    monkeypatch.setattr(mailer, "RECORD_SENT_WITHIN", 1)
    smtp = restarting_smtp(down_for=4)
    submission_id = submit_essay(client, auth, world)

    run_one_job("email")
    smtp.wait_for_database()
    [row] = outbox()
    assert row.sent_at is None, "the database was away for the whole of the first run"

    run_one_job("email")

    assert_one_receipt(smtp, submission_id, "Already sent to alice@uni.test; not sent again",
                       attempts=2)
