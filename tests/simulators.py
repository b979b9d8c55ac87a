"""Fixtures that run the simulated outside services (Turnitin, the student-records system) on
free 127.0.0.1 ports and point the app at them, and a worker run that includes retries
scheduled for later.

A test module imports the fixture functions (`turnitin_simulator`, `records_simulator`) and
asks for the fixtures by their short names (`turnitin`, `records`)."""

import time
from datetime import UTC, datetime

import pytest
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry

from app import pipeline
from app.extensions import db, get_redis
from app.models import StepRun
from app.steps import QUEUES
from simulators.admin_records import AdminRecordsSimulator
from simulators.turnitin import TurnitinSimulator

TURNITIN_KEY = "test-turnitin-key"
RECORDS_SECRET = "test-records-secret"


@pytest.fixture(name="turnitin")
def turnitin_simulator(app):
    simulator = TurnitinSimulator(api_key=TURNITIN_KEY).start()
    app.config.update(
        TURNITIN_URL=simulator.url,
        TURNITIN_API_KEY=TURNITIN_KEY,
        TURNITIN_TIMEOUT=2,
        TURNITIN_POLL_SECONDS=5,
        TURNITIN_POLL_INTERVAL=0.05,
    )
    yield simulator
    simulator.stop()


@pytest.fixture(name="records")
def records_simulator(app):
    simulator = AdminRecordsSimulator(secret=RECORDS_SECRET).start()
    app.config.update(
        ADMIN_SYNC_URL=simulator.records_url,
        ADMIN_SYNC_SECRET=RECORDS_SECRET,
        ADMIN_SYNC_TIMEOUT=2,
    )
    yield simulator
    simulator.stop()


def scheduled_retries():
    """{job id: when it is due} for every job waiting to be retried later."""
    redis = get_redis()
    due = {}
    for name in QUEUES:
        registry = ScheduledJobRegistry(name, connection=redis)
        for job_id in registry.get_job_ids():
            due[job_id] = registry.get_scheduled_time(job_id)
    return due


def run_jobs_with_scheduler():
    """Run every queued job, and every scheduled retry that is due, as a worker started with
    its scheduler would; retries not yet due stay scheduled."""
    SimpleWorker(list(QUEUES), connection=get_redis()).work(
        burst=True, with_scheduler=True, logging_level="WARNING")
    db.session.remove()


def run_jobs_when_due(limit=10.0):
    """Wait (at most `limit` seconds) until every scheduled retry is due, then run them all."""
    latest = max(scheduled_retries().values(), default=None)
    if latest is not None:
        wait = (latest - datetime.now(UTC)).total_seconds()
        assert wait < limit, f"a retry is scheduled {wait:.0f} s from now"
        time.sleep(max(wait, 0) + 0.05)
    run_jobs_with_scheduler()


def rerun_after_crash(submission_id, step_name):
    """Leave the step as a worker killed with -9 mid-step would (running, its job gone), then
    queue it again as the reconciler does."""
    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name=step_name)
    ).scalar_one()
    step_run.status = "running"
    step_run.submission.status = "processing"
    db.session.commit()
    assert pipeline.claim_for_queue(step_run, from_statuses=("running",))
    db.session.commit()
    pipeline.enqueue_step(step_run)
