"""Periodic upkeep: the reconciler that makes the database, not Redis, the source of truth."""

import logging
from datetime import timedelta

from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq_scheduler import Scheduler
from sqlalchemy import update

from app import pipeline
from app.extensions import db, get_redis
from app.models import StepRun, Submission, utcnow

log = logging.getLogger(__name__)

# A step queued this recently may still be on its way into Redis.
QUEUE_GRACE = timedelta(seconds=15)
RECONCILE_EVERY = 20
LIVE_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def _live_worker_names(redis):
    return {worker.name for worker in Worker.all(connection=redis)}


def job_is_alive(job_id, redis, live_workers):
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in LIVE_STATUSES:
        return True
    if status == JobStatus.STARTED:
        return job.worker_name in live_workers
    return False


def _requeue(step_run, redis, live_workers, now):
    if step_run.status == "queued" and step_run.queued_at and now - step_run.queued_at < QUEUE_GRACE:
        return False
    if step_run.job_id and job_is_alive(step_run.job_id, redis, live_workers):
        return False
    # Claim it only if nobody changed it since we looked: safe from several processes at once.
    claimed = db.session.execute(
        update(StepRun)
        .where(StepRun.id == step_run.id, StepRun.status == step_run.status,
               StepRun.job_id.is_(step_run.job_id) if step_run.job_id is None
               else StepRun.job_id == step_run.job_id)
        .values(status="pending")
    ).rowcount
    db.session.commit()
    if not claimed:
        return False
    db.session.refresh(step_run)
    log.info("event=reconcile_requeue submission_id=%s step=%s lost_job_id=%s",
             step_run.submission_id, step_run.name, step_run.job_id)
    return True


def reconcile():
    redis = get_redis()
    live_workers = _live_worker_names(redis)
    now = utcnow()
    in_flight = db.session.execute(
        db.select(StepRun).where(StepRun.status.in_(("queued", "running", "retrying")))
    ).scalars().all()
    requeued = sum(_requeue(s, redis, live_workers, now) for s in in_flight)

    # Pending steps whose dependencies are done (a crash between a step and its successors),
    # and submissions that never got their first step into Redis.
    waiting = db.session.execute(
        db.select(Submission).where(Submission.status.in_(("received", "processing")))
        .where(Submission.steps.any(StepRun.status == "pending"))
    ).scalars().all()
    enqueued = sum(len(pipeline.enqueue_ready(s)) for s in waiting)
    completed = sum(pipeline.complete_if_done(s.id) for s in waiting)
    summary = {"checked": len(in_flight), "requeued": requeued, "enqueued": enqueued,
               "completed": completed}
    log.info("event=reconcile %s", " ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def scheduler_for(interval=5.0):
    return Scheduler(queue_name="maintenance", connection=get_redis(), interval=interval)


def schedule_periodic(scheduler):
    for job in scheduler.get_jobs():
        if job.id == "periodic-reconcile":
            scheduler.cancel(job)
    scheduler.schedule(
        scheduled_time=utcnow().replace(tzinfo=None), func="jobs.maintenance.reconcile",
        interval=RECONCILE_EVERY, repeat=None, id="periodic-reconcile", queue_name="maintenance",
        result_ttl=RECONCILE_EVERY * 3,
    )
