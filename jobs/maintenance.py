"""Periodic upkeep: the reconciler that makes the database, not Redis, the source of truth."""

import logging
import signal
import sys
import time
from datetime import UTC, timedelta

from flask import current_app
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq_scheduler import Scheduler
from sqlalchemy import String, cast, exists, literal, select, update

from app import pipeline
from app.extensions import db, get_redis
from app.grades.release_jobs import (
    enqueue_grade_email,
    grade_email_job_id,
    restore_scheduled_releases,
)
from app.inbound import apply_job_id, enqueue_apply
from app.models import Grade, InboundMessage, OutboxEmail, StepRun, Submission, utcnow
from app.steps import PERIODIC, QUEUES
from jobs.redis_outage import REDIS_DOWN, wait_for_redis

log = logging.getLogger(__name__)

IN_FLIGHT = ("queued", "running", "retrying")


def _live_worker_names(redis):
    return {worker.name for worker in Worker.all(connection=redis)}


def _waiting_job_ids(redis):
    """Jobs waiting in a queue, or for their retry time. One marked queued but not among them
    was taken by a worker that died before starting it: RQ parks it in the queue's intermediate
    list for ten minutes. One marked scheduled but not among them belonged to a worker killed
    as it set up the retry: RQ marks the job scheduled before it files it for later."""
    # One MULTI: a retry the scheduler moves from its registry to its queue meanwhile is seen
    # in one or the other, not in neither.
    pipe = redis.pipeline(transaction=True)
    for name in QUEUES:
        rq_queue = pipeline.queue(name)
        pipe.lrange(rq_queue.key, 0, -1)
        pipe.zrange(ScheduledJobRegistry(queue=rq_queue).key, 0, -1)
    return {job_id.decode() for job_ids in pipe.execute() for job_id in job_ids}


def _waits_now(redis, job):
    """Whether this one job waits in its queue or for its retry time, read now, or was taken
    from its queue by a worker a moment ago and is about to start."""
    rq_queue = pipeline.queue(job.origin)
    pipe = redis.pipeline(transaction=True)
    pipe.zscore(ScheduledJobRegistry(queue=rq_queue).key, job.id)
    pipe.lpos(rq_queue.key, job.id)
    pipe.lpos(rq_queue.intermediate_queue_key, job.id)
    scheduled_at, position, taken = pipe.execute()
    if scheduled_at is not None or position is not None:
        return True
    return taken is not None and _taken_moments_ago(redis, job.id)


def _taken_moments_ago(redis, job_id):
    """RQ moves a job it dequeues to the queue's intermediate list, then marks it started a
    moment later. One still there RECONCILE_GRACE_SECONDS after a reconciler first saw it
    there was taken by a worker that died in between."""
    key = f"reconcile:taken:{job_id}"
    now = time.time()
    redis.set(key, now, nx=True, ex=3600)
    first_seen = float(redis.get(key) or now)
    return now - first_seen < current_app.config["RECONCILE_GRACE_SECONDS"]


def job_is_dead(redis, job, live_workers, waiting, now, dead_after):
    """Dead by the snapshot, and still dead when this one job is read again: a step that went
    from running to retrying after the snapshot was taken is not put back early."""
    if job_is_alive(job, live_workers, waiting, now, dead_after):
        return False
    if job is None:
        return True
    try:
        job.refresh()
    except NoSuchJobError:
        return True
    waits = {job.id} if _waits_now(redis, job) else set()
    return not job_is_alive(job, live_workers, waits, now, dead_after)


def job_is_alive(job, live_workers, waiting, now, dead_after):
    if job is None:
        return False
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        return job.id in waiting
    if status == JobStatus.DEFERRED:
        return True
    if status == JobStatus.STARTED:
        # A worker killed with -9 stays registered for a while; its job stops heartbeating.
        beat = job.last_heartbeat
        fresh = beat is None or now - beat.replace(tzinfo=UTC) < dead_after
        return job.worker_name in live_workers and fresh
    return False


def _requeue(seen, job, live_workers, waiting, now):
    """Claim a lost step back to pending, only if it is still as we saw it."""
    config = current_app.config
    # A step queued this recently may still be on its way into Redis.
    grace = timedelta(seconds=config["RECONCILE_GRACE_SECONDS"])
    if seen.status == "queued" and seen.queued_at and now - seen.queued_at < grace:
        return False
    if not job_is_dead(get_redis(), job, live_workers, waiting, now,
                       timedelta(seconds=config["WORKER_DEAD_AFTER_SECONDS"])):
        return False
    same_job = StepRun.job_id.is_(None) if seen.job_id is None else StepRun.job_id == seen.job_id
    claimed = db.session.execute(
        update(StepRun)
        .where(StepRun.id == seen.id, StepRun.status == seen.status, same_job)
        .values(status="pending")
    ).rowcount
    db.session.commit()
    if not claimed:
        return False
    log.info("event=reconcile_requeue submission_id=%s step=%s lost_job_id=%s",
             seen.submission_id, seen.name, seen.job_id)
    if seen.status == "queued" and job is not None and job.get_status(
            refresh=False) == JobStatus.FAILED:
        # Its job failed before it ran the step: a staff requeue Redis never took (the step
        # keeps its failed job's id until Redis takes a new job). Spent, as the step gets one.
        pipeline.drop_failed_job(job)
    return True


def enqueue_due_retries(redis):
    """Move due retries into their queues wherever no live RQ scheduler holds the lock."""
    # When the worker whose scheduler moves retries is killed (or its scheduler dies with
    # Redis), the other workers try to take the lock over only every ten minutes.
    scheduler = RQScheduler(QUEUES, connection=redis)
    orphaned = scheduler.acquire_locks()
    try:
        if orphaned:
            scheduler.enqueue_scheduled_jobs()
    finally:
        scheduler.release_locks()
        scheduler.connection.connection_pool.disconnect()
    return orphaned


# An email still unsent this long after it was owed is left to staff (the admin outbox lists
# it): an address refused through days of retries will not take the next one.
EMAILS_OWED_FOR = timedelta(days=3)
# Longer than one reconciler takes from reading a job's state to putting it back.
REQUEUE_CLAIM_SECONDS = 60


def _gave_up_within(job, hold, now):
    """A job that used up its retries this recently stays failed for staff to see a while."""
    if job is None or job.get_status(refresh=False) != JobStatus.FAILED or job.ended_at is None:
        return False
    return now - job.ended_at.replace(tzinfo=UTC) < hold


def requeue_unsent_emails(redis, live_workers, waiting, now):
    """Put back the delivery of every email still owed after the grace period with no live job:
    a grade email whose job was lost (before or after it made its outbox row) or ran out of
    retries, and a receipt whose email step gave up. However many reconcilers race here, the
    mailer sends an outbox row once: it locks the row and checks it, and Redis, first."""
    config = current_app.config
    due = now - timedelta(seconds=config["RECONCILE_GRACE_SECONDS"])
    since = now - EMAILS_OWED_FOR
    dead_after = timedelta(seconds=config["WORKER_DEAD_AFTER_SECONDS"])
    # grade_email_key, in SQL.
    emailed = exists().where(
        OutboxEmail.dedupe_key == literal("grade:") + cast(Grade.submission_id, String),
        OutboxEmail.sent_at.is_not(None))
    owed = db.session.execute(
        select(Grade.submission_id)
        .where(Grade.notified_at > since, Grade.notified_at <= due, ~emailed)
    ).scalars().all()
    jobs = Job.fetch_many([grade_email_job_id(s) for s in owed], connection=redis)
    hold = timedelta(seconds=config["EMAIL_RETRY_AFTER_FAILURE_SECONDS"])
    requeued = 0
    for submission_id, job in zip(owed, jobs, strict=True):
        if not job_is_dead(redis, job, live_workers, waiting, now, dead_after):
            continue
        if _gave_up_within(job, hold, now):
            continue
        # One reconciler puts it back; the others, which saw the same dead job, leave it.
        claim = f"reconcile:grade-email:{submission_id}"
        if not redis.set(claim, 1, nx=True, ex=REQUEUE_CLAIM_SECONDS):
            continue
        if job is not None:
            job.delete()  # failed, or lost with its worker: make way for a fresh job
        if enqueue_grade_email(submission_id):
            requeued += 1
            log.info("event=reconcile_grade_email submission_id=%s lost_job_status=%s",
                     submission_id, job.get_status(refresh=False) if job else None)

    # A receipt's job is its email step; one still in flight is the step reconciler's. One that
    # gave up stays with staff (needs attention) for a while before it is tried again, so a
    # long mail outage shows on the dashboard instead of flickering in and out of it.
    gave_up_before = now - hold
    gave_up = db.session.execute(
        select(StepRun).join(Submission)
        .where(StepRun.name == "email", StepRun.status == "failed",
               StepRun.finished_at <= min(due, gave_up_before),
               Submission.received_at > since)
    ).scalars().all()
    for step_run in gave_up:
        # A claim from `failed` in the database: a racing reconciler's requeue of it is a no-op.
        if pipeline.requeue_step(step_run).requeued:
            requeued += 1
            log.info("event=reconcile_receipt submission_id=%s job_id=%s",
                     step_run.submission_id, step_run.job_id)
    return requeued


def requeue_unapplied_messages(redis, live_workers, waiting, now):
    """Hand back to the workers every student-records message still to be applied after the
    grace period with no live job: its job was lost with Redis or a killed worker, or it ran and
    left the message waiting for an earlier one (at most once a claim period)."""
    config = current_app.config
    due = now - timedelta(seconds=config["RECONCILE_GRACE_SECONDS"])
    dead_after = timedelta(seconds=config["WORKER_DEAD_AFTER_SECONDS"])
    unapplied = db.session.execute(
        select(InboundMessage.id)
        .where(InboundMessage.state == "received", InboundMessage.received_at <= due)
    ).scalars().all()
    jobs = Job.fetch_many([apply_job_id(i) for i in unapplied], connection=redis)
    requeued = 0
    for inbound_id, job in zip(unapplied, jobs, strict=True):
        if not job_is_dead(redis, job, live_workers, waiting, now, dead_after):
            continue
        if not redis.set(f"reconcile:inbound:{inbound_id}", 1, nx=True,
                         ex=REQUEUE_CLAIM_SECONDS):
            continue
        if job is not None:
            job.delete()
        if enqueue_apply(inbound_id):
            requeued += 1
            log.info("event=reconcile_inbound inbound_id=%s lost_job_status=%s",
                     inbound_id, job.get_status(refresh=False) if job else None)
    return requeued


def reconcile():
    redis = get_redis()
    orphaned = enqueue_due_retries(redis)
    if orphaned:
        log.info("event=retries_moved queues=%s", ",".join(sorted(orphaned)))
    live_workers = _live_worker_names(redis)
    now = utcnow()
    # Read before the steps: a job queued after this is within the grace period.
    waiting = _waiting_job_ids(redis)
    # Plain rows, not ORM objects: each claim commits, and must compare with what we saw here.
    in_flight = db.session.execute(
        db.select(StepRun.id, StepRun.submission_id, StepRun.name, StepRun.status,
                  StepRun.job_id, StepRun.queued_at)
        .where(StepRun.status.in_(IN_FLIGHT))
    ).all()
    jobs = Job.fetch_many([s.job_id or "-" for s in in_flight], connection=redis)
    requeued = sum(_requeue(s, job, live_workers, waiting, now)
                   for s, job in zip(in_flight, jobs, strict=True))
    emails_requeued = requeue_unsent_emails(redis, live_workers, waiting, now)
    messages_requeued = requeue_unapplied_messages(redis, live_workers, waiting, now)

    # Submissions with nothing in flight are stalled: a crash between a step and its successors
    # or its completion, or an intake that never got the first step into Redis. One with a step
    # in flight moves on when that step ends, so it costs nothing here.
    waiting = db.session.execute(
        db.select(Submission).where(Submission.status.in_(("received", "processing")))
        .where(~Submission.steps.any(StepRun.status.in_(IN_FLIGHT)))
    ).scalars().all()
    enqueued = sum(len(pipeline.enqueue_ready(s)) for s in waiting)
    completed = sum(pipeline.complete_if_done(s.id) for s in waiting)
    summary = {"checked": len(in_flight), "requeued": requeued, "enqueued": enqueued,
               "completed": completed, "emails_requeued": emails_requeued,
               "messages_requeued": messages_requeued,
               "releases_restored": restore_scheduled_releases()}
    # Every few seconds: said at INFO only when it put something right.
    level = logging.INFO if any(v for k, v in summary.items() if k != "checked") else logging.DEBUG
    log.log(level, "event=reconcile %s", " ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


class MaintenanceScheduler(Scheduler):
    """rq-scheduler that waits out a Redis outage (stopped, restarted empty) and puts its
    periodic jobs back if Redis lost them (flush, restart)."""

    def run(self, burst=False):
        # Each run installs rq-scheduler's own stop handlers once it is registered; until then,
        # waiting for a Redis that was down as it started, a stop signal ends the process.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: sys.exit())
        while True:
            try:
                return super().run(burst=burst)
            except REDIS_DOWN as error:
                if burst:
                    raise
                wait_for_redis(self.connection, "process=scheduler", error)
                # The failed run could not record its end; the next must not find itself alive.
                self.register_death()

    # Both are best effort: during an outage (or SIGTERM in one) the key and the lock expire
    # by themselves, and raising here would end the process.
    def register_death(self):
        try:
            super().register_death()
        except REDIS_DOWN:
            log.info("event=scheduler_death_unrecorded reason=redis_unavailable")

    def remove_lock(self):
        try:
            super().remove_lock()
        except REDIS_DOWN:
            log.info("event=scheduler_lock_left reason=redis_unavailable")

    def enqueue_jobs(self):
        missing = [job_id for job_id in PERIODIC if job_id not in self]
        if missing:
            log.warning("event=periodic_jobs_restored ids=%s", ",".join(missing))
            schedule_periodic(self, only=missing)
        return super().enqueue_jobs()


def scheduler_for(interval=5.0):
    return MaintenanceScheduler(queue_name="maintenance", connection=get_redis(),
                                interval=interval)


def schedule_periodic(scheduler, only=None):
    """Each periodic job of app/steps.py's table, due now and then every interval."""
    for job_id in only or PERIODIC:
        if job_id in scheduler:
            scheduler.cancel(job_id)
        job = PERIODIC[job_id]
        every = current_app.config[job.every]
        scheduler.schedule(
            scheduled_time=utcnow().replace(tzinfo=None), func=job.func, interval=every,
            repeat=None, id=job_id, queue_name=job.queue, timeout=job.timeout,
            result_ttl=job.result_ttl or every * 3,
        )
