import re
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import redis
import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app.extensions import db
from simulators.admin_records import AdminRecordsSimulator
from simulators.turnitin import TurnitinSimulator
from tests.clamd import ClamdServer
from tests.conftest import ROOT, Client, process_env
from tests.faults.run import FaultRun
from tests.faults.stack import Fleet, PostgresCluster
from tests.faults.workload import enrol_course
from tests.services import RedisServer
from tests.smtp import SmtpServer

WORKERS = 6
TURNITIN_KEY = "fault-turnitin-key"
RECORDS_SECRET = "fault-records-secret"
# Retries spaced like production's, four times sooner: a scan then keeps trying for two minutes
# at least, the other steps for three or more, longer than the outages below, as production's
# span outages of several minutes (tests/test_retries.py).
BACKOFF_SCALE = 0.25
FAST_MAINTENANCE = {
    "RECONCILE_EVERY_SECONDS": 2,
    "RECONCILE_GRACE_SECONDS": 3,
    # worker.py heartbeats a running job every 10 s; two missed beats is dead.
    "WORKER_DEAD_AFTER_SECONDS": 20,
    "RETRY_BACKOFF_SCALE": BACKOFF_SCALE,
}


@dataclass
class Services:
    redis: RedisServer
    postgres: PostgresCluster
    clamd: ClamdServer

    def revive(self):
        """Start whatever a scenario that failed mid-fault left stopped."""
        if self.redis.process.poll() is not None:
            self.redis.start()
        if not self.postgres.running:
            self.postgres.start()
        if self.clamd.process.poll() is not None:
            self.clamd.start()


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Private Redis, PostgreSQL and clamd, shared by the scenarios and stopped at the end."""
    with ExitStack() as cleanup:
        redis_server = RedisServer(tmp_path_factory.mktemp("fault-redis"))
        cleanup.callback(redis_server.stop)
        postgres = PostgresCluster()
        cleanup.callback(postgres.remove)
        # A short path, so the unix socket stays where it is across a restart.
        clamd_dir = tempfile.mkdtemp(prefix="faults-clamd-")
        cleanup.callback(shutil.rmtree, clamd_dir, ignore_errors=True)
        clamd = ClamdServer(clamd_dir)
        cleanup.callback(clamd.stop)
        redis_server.start()
        postgres.start()
        clamd.start()
        yield Services(redis_server, postgres, clamd)


def create_database(admin_url, name):
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


@pytest.fixture
def fault_run(services, request, tmp_path, capsys):
    """A fresh database, an empty Redis, new SMTP and simulator servers, and workers plus the
    scheduler configured for all of them; every process and server stops at the end."""
    name = "faults_" + re.sub(r"\W", "_", request.node.name.removeprefix("test_"))[:50]
    with ExitStack() as cleanup:
        services.revive()
        create_database(services.postgres.admin_url, name)
        redis.Redis.from_url(services.redis.url).flushdb()
        smtp = SmtpServer().start()
        cleanup.callback(smtp.stop)
        turnitin = TurnitinSimulator(api_key=TURNITIN_KEY).start()
        cleanup.callback(turnitin.stop)
        records = AdminRecordsSimulator(secret=RECORDS_SECRET).start()
        cleanup.callback(records.stop)
        outside = {
            "CLAMD_SOCKET": str(services.clamd.socket),
            "SMTP_URL": smtp.url,
            "TURNITIN_URL": turnitin.url,
            "TURNITIN_API_KEY": TURNITIN_KEY,
            "ADMIN_SYNC_URL": records.records_url,
            "ADMIN_SYNC_SECRET": RECORDS_SECRET,
        }
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": services.postgres.url(name),
            "REDIS_URL": services.redis.url,
            "STORAGE_DIR": str(tmp_path / "storage"),
            "SECRET_KEY": "fault-secret",
            "PUBLIC_URL": "http://submissions.test",
            "MIGRATIONS_DIR": str(ROOT / "migrations"),
            **outside,
            **FAST_MAINTENANCE,
        })
        context = app.app_context()
        context.push()
        cleanup.callback(context.pop)
        cleanup.callback(db.engine.dispose)
        cleanup.callback(db.session.remove)
        upgrade(directory=str(ROOT / "migrations"))
        assignment_id, headers = enrol_course()
        fleet = Fleet(process_env(app, **outside, **FAST_MAINTENANCE), tmp_path / "logs",
                      WORKERS)
        cleanup.callback(fleet.stop)
        app.test_client_class = Client
        run = FaultRun(app, app.test_client(), fleet, assignment_id, headers, services, smtp,
                       turnitin, records)
        yield run
        with capsys.disabled():
            print(f"\n[faults] {request.node.name}: {time.monotonic() - run.started:.0f} s; "
                  + " | ".join(run.notes), flush=True)
