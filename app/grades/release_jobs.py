"""The jobs that carry grades out, in Redis: a release job (queued at once, or moved by
rq-scheduler at its time) and each student's grade email after it; and, for the reconciler,
putting back a release job that Redis lost. The assignment row is the truth; these jobs only
act on it."""

import logging
import uuid
from datetime import timedelta

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq_scheduler import Scheduler
from sqlalchemy import select, update

from app.extensions import db, get_redis
from app.models import Assignment, utcnow
from app.pipeline import carry_policy, enqueue, enqueue_once
from app.steps import JOBS

log = logging.getLogger(__name__)


# A restored release this close to now is queued at once rather than through the scheduler.
SCHEDULER_LEAD = timedelta(seconds=2)


# A scheduler polls every few seconds; a due job left this long has nobody to move it.
SCHEDULER_STALLED = timedelta(seconds=60)


# The release job and the grade email job (jobs/grades.py); their policy (queue, time limit,
# retries, TTLs) is in app/steps.py's table.
RELEASE = JOBS["release"]


GRADE_EMAIL = JOBS["grade_email"]


def release_scheduler():
    return Scheduler(queue_name=RELEASE.queue, connection=get_redis())


def enqueue_release(assignment_id, job_id, at=None):
    """Queue the release job at once, or hand it to rq-scheduler to queue at `at`."""
    description = f"release grades of assignment {assignment_id}"
    if at is None:
        enqueue(RELEASE, assignment_id, job_id=job_id, description=description)
        return
    job = release_scheduler().enqueue_at(
        at, RELEASE.func, assignment_id, job_id=job_id, timeout=RELEASE.timeout,
        job_result_ttl=RELEASE.result_ttl, job_description=description,
    )
    # rq-scheduler's enqueue_at takes no retry policy: the job gets the immediate release's.
    carry_policy(job, RELEASE)


def cancel_release_job(job_id):
    redis = get_redis()
    release_scheduler().cancel(job_id)
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return
    if job.get_status(refresh=False) != JobStatus.STARTED:
        job.delete()


def release_job_alive(job_id):
    scheduler = release_scheduler()
    due = scheduler.connection.zscore(scheduler.scheduled_jobs_key, job_id)
    if due is not None:
        # Long overdue in the scheduler's set means no scheduler is running to move it.
        return due > (utcnow() - SCHEDULER_STALLED).timestamp()
    try:
        status = Job.fetch(job_id, connection=scheduler.connection).get_status(refresh=False)
    except NoSuchJobError:
        return False
    # A scheduled-status job no longer in the scheduler's set was cancelled or lost.
    return status in (JobStatus.QUEUED, JobStatus.STARTED)


def grade_email_key(submission_id):
    return f"grade:{submission_id}"


def grade_email_job_id(submission_id):
    return f"grade-email-{submission_id}"


def enqueue_grade_email(submission_id):
    """Queue the student's grade email unless a job for it is already waiting or running."""
    return enqueue_once(GRADE_EMAIL, grade_email_job_id(submission_id), submission_id,
                        description=f"grade email for submission {submission_id}")


def restore_scheduled_releases():
    """Put back the release job of every pending release whose job Redis no longer has (or
    that no scheduler has moved long after it was due)."""
    now = utcnow()
    pending = db.session.execute(
        select(Assignment).where(Assignment.release_at.is_not(None),
                                 Assignment.released_at.is_(None))
    ).scalars().all()
    restored = 0
    for assignment in pending:
        old_job_id = assignment.release_job_id
        if old_job_id and release_job_alive(old_job_id):
            continue
        job_id = uuid.uuid4().hex
        # Only if nobody rescheduled, cancelled or released it since we looked.
        claimed = db.session.execute(
            update(Assignment)
            .where(Assignment.id == assignment.id, Assignment.released_at.is_(None),
                   Assignment.release_at == assignment.release_at,
                   Assignment.release_job_id.is_(None) if old_job_id is None
                   else Assignment.release_job_id == old_job_id)
            .values(release_job_id=job_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        if not claimed:
            continue
        if old_job_id:
            cancel_release_job(old_job_id)
        at = assignment.release_at if assignment.release_at > now + SCHEDULER_LEAD else None
        enqueue_release(assignment.id, job_id, at=at)
        restored += 1
        log.info("event=release_restored assignment_id=%s lost_job_id=%s job_id=%s",
                 assignment.id, old_job_id, job_id)
    return restored
