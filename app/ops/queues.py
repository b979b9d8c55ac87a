"""What RQ holds right now, read from its own registries (we keep no copy), and the two
operator actions on a failed job: requeue it through the pipeline, or delete it."""

from dataclasses import dataclass
from datetime import UTC, datetime

from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq_scheduler import Scheduler

from app import pipeline
from app.extensions import db
from app.models import StepRun, utcnow
from app.steps import QUEUES

# The queues page lists at most this many failed jobs per queue, newest first.
FAILED_SHOWN = 100


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int
    oldest_age: float | None  # seconds the first waiting job has waited
    started: int
    scheduled: int
    deferred: int
    failed: int
    finished: int


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    description: str
    submission_id: int | None
    step: str | None
    failed_at: datetime | None
    error: str

    @property
    def error_summary(self):
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "(no error recorded)"


def _age(job, now):
    if job is None or job.enqueued_at is None:
        return None
    return max(0.0, (now - job.enqueued_at).total_seconds())


def queue_states(redis):
    now = utcnow()
    states = []
    for name in QUEUES:
        queue = Queue(name, connection=redis)
        first = queue.get_job_ids(0, 1)
        oldest = Job.fetch_many(first, connection=redis)[0] if first else None
        states.append(QueueState(
            name=name,
            depth=queue.count,
            oldest_age=_age(oldest, now),
            started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
            scheduled=ScheduledJobRegistry(queue=queue).get_job_count(cleanup=False),
            deferred=DeferredJobRegistry(queue=queue).get_job_count(cleanup=False),
            failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
            finished=FinishedJobRegistry(queue=queue).get_job_count(cleanup=False),
        ))
    return states


def worker_count(redis):
    return len(Worker.all(connection=redis))


def workers(redis):
    return [
        {
            "name": worker.name,
            "state": worker.get_state(),
            "queues": ", ".join(worker.queue_names()),
            "current_job": worker.get_current_job_id(),
            "last_heartbeat": worker.last_heartbeat,
            "successful": worker.successful_job_count,
            "failed": worker.failed_job_count,
        }
        for worker in sorted(Worker.all(connection=redis), key=lambda w: w.name)
    ]


def scheduled_jobs(redis):
    """Retries waiting out their backoff (RQ's own scheduler) and periodic jobs (rq-scheduler)."""
    rows = []
    for name in QUEUES:
        registry = ScheduledJobRegistry(name, connection=redis)
        for job_id in registry.get_job_ids(cleanup=False):
            job = Job.fetch_many([job_id], connection=redis)[0]
            if job is not None:
                rows.append({"id": job.id, "queue": name, "description": job.description,
                             "at": registry.get_scheduled_time(job), "repeat": None})
    scheduler = Scheduler(connection=redis)
    for job in scheduler.get_jobs():
        score = redis.zscore(scheduler.scheduled_jobs_key, job.id)
        rows.append({
            "id": job.id, "queue": job.origin, "description": job.description,
            "at": datetime.fromtimestamp(score, UTC) if score is not None else None,
            "repeat": job.meta.get("interval"),
        })
    return sorted(rows, key=lambda row: row["at"] or datetime.max.replace(tzinfo=UTC))


def _error_of(job):
    result = job.latest_result()
    if result is not None and result.type == Result.Type.FAILED:
        return result.exc_string or ""
    return ""


def failed_jobs(redis):
    rows = []
    for name in QUEUES:
        registry = FailedJobRegistry(name, connection=redis)
        ids = registry.get_job_ids(0, FAILED_SHOWN - 1, desc=True, cleanup=False)
        for job in Job.fetch_many(ids, connection=redis):
            if job is None:
                continue
            rows.append(FailedJob(
                id=job.id, queue=name, description=job.description or job.func_name,
                submission_id=job.meta.get("submission_id"), step=job.meta.get("step"),
                failed_at=job.ended_at, error=_error_of(job),
            ))
    return rows


def _step_run_of(job):
    submission_id, step = job.meta.get("submission_id"), job.meta.get("step")
    if submission_id is None or step is None:
        return None
    return db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name=step)
    ).scalar_one_or_none()


def requeue_failed_job(job_id, redis):
    """Requeue one failed job; returns the sentence to show the operator."""
    job = Job.fetch(job_id, connection=redis)
    if "submission_id" not in job.meta:  # grades release, maintenance: no step row to consult
        FailedJobRegistry(job.origin, connection=redis).requeue(job)
        return f"Requeued {job.description or job.id} on {job.origin}."
    step_run = _step_run_of(job)
    outcome = (pipeline.requeue_step(step_run, spent_job_id=job.id) if step_run is not None
               else pipeline.NOT_REQUEUED)
    if not outcome.requeued:
        pipeline.drop_failed_job(job)
        state = f"is {step_run.status}" if step_run is not None else "no longer exists"
        return f"Nothing to requeue: that step {state}; the stale failed job was removed."
    where = ("it is back in its queue" if outcome.enqueued else
             "the queue did not answer, so it will start within a minute of it coming back")
    return f"Requeued step {step_run.name} of submission {step_run.submission_id}; {where}."


def delete_failed_job(job_id, redis):
    """Delete a failed job; a pipeline step stays failed (and visible) in the database."""
    job = Job.fetch(job_id, connection=redis)
    pipeline.drop_failed_job(job)
    return f"Deleted failed job {job.description or job.id}."

