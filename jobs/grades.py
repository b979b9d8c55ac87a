"""Grade release on the `grades` queue, and the one email per student that follows on the
`email` queue. Both are safe to run twice: the database decides what still has to happen."""

import logging
from datetime import timedelta

from flask import current_app
from rq import Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq_scheduler import Scheduler
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app import flash
from app.events.publisher import emit
from app.extensions import db, get_redis
from app.grades.marking import emit_grade, emit_marking, markable_ids
from app.models import Assignment, Enrollment, Grade, OutboxEmail, Submission, utcnow
from app.services import mailer

log = logging.getLogger(__name__)

QUEUE = "grades"
RELEASE_TIMEOUT = 600
RELEASE_RETRY_DELAYS = (5, 15, 60, 300)
EMAIL_QUEUE = "email"
EMAIL_TIMEOUT = 60
EMAIL_RETRY_DELAYS = (15, 30, 60, 120, 300, 600, 600)
RESULT_TTL = 24 * 3600
FAILURE_TTL = 30 * 24 * 3600
# rq-scheduler moves a job when its whole second comes round, possibly just before our clock.
CLOCK_SKEW = timedelta(seconds=2)
LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                     JobStatus.STARTED}


def retry_policy(delays):
    scale = current_app.config["RETRY_BACKOFF_SCALE"]
    return Retry(max=len(delays), interval=[round(delay * scale) for delay in delays])


def release_scheduler():
    return Scheduler(queue_name=QUEUE, connection=get_redis())


def enqueue_release(assignment_id, job_id, at=None):
    """Queue the release job at once, or hand it to rq-scheduler to queue at `at`."""
    retry = retry_policy(RELEASE_RETRY_DELAYS)
    description = f"release grades of assignment {assignment_id}"
    if at is None:
        Queue(QUEUE, connection=get_redis()).enqueue(
            "jobs.grades.release", assignment_id, job_id=job_id, job_timeout=RELEASE_TIMEOUT,
            retry=retry, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
            description=description,
        )
        return
    job = release_scheduler().enqueue_at(
        at, "jobs.grades.release", assignment_id, job_id=job_id, timeout=RELEASE_TIMEOUT,
        job_result_ttl=RESULT_TTL, job_description=description,
    )
    # enqueue_at takes no retry policy; give the stored job the same one as an immediate release.
    job.retries_left = retry.max
    job.retry_intervals = retry.intervals
    job.failure_ttl = FAILURE_TTL
    job.save()


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
    redis = get_redis()
    if job_id in release_scheduler():
        return True
    try:
        status = Job.fetch(job_id, connection=redis).get_status(refresh=False)
    except NoSuchJobError:
        return False
    # A scheduled-status job no longer in the scheduler's set was cancelled or lost.
    return status in (JobStatus.QUEUED, JobStatus.STARTED)


def release(assignment_id):
    job = get_current_job()
    job_id = job.id if job is not None else None
    outcome = release_grades(assignment_id, job_id)
    log.info("event=grade_release assignment_id=%s job_id=%s outcome=%s",
             assignment_id, job_id, outcome)
    return outcome


def release_grades(assignment_id, job_id):
    """Release if this job is still the assignment's release and it is due; then tell every
    student whose grade has not been announced yet. The flash goes out only with the release."""
    now = utcnow()
    won = db.session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.released_at.is_(None),
               Assignment.release_job_id == job_id, Assignment.release_at <= now + CLOCK_SKEW)
        .values(released_at=now, release_job_id=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None:
        return "missing"
    db.session.refresh(assignment)
    if assignment.released_at is None:
        db.session.rollback()
        return "stale: cancelled, moved or not due"
    announced = announce_grades(assignment, now)
    if won:
        announce_release(assignment)
    if won or announced:
        emit_marking(assignment)
    db.session.commit()
    queued = enqueue_grade_emails(assignment)
    return f"{'released' if won else 'already released'}; {announced} grades announced, " \
           f"{queued} emails queued"


def announce_grades(assignment, now):
    """Claim every marked grade not yet announced and send each as a live `grade` event."""
    claimed = db.session.execute(
        update(Grade)
        .where(Grade.submission_id.in_(markable_ids(assignment.id)), Grade.notified_at.is_(None))
        .values(notified_at=now)
        .returning(Grade.id)
        .execution_options(synchronize_session=False)
    ).scalars().all()
    if not claimed:
        return 0
    grades = db.session.execute(
        select(Grade).where(Grade.id.in_(claimed))
        .options(selectinload(Grade.submission)).order_by(Grade.id)
    ).scalars().all()
    for grade in grades:
        emit_grade(grade, assignment)
    return len(grades)


def announce_release(assignment):
    text = f"Grades for {assignment.course.code}: {assignment.title} are out"
    link_url = f"/assignments/{assignment.id}"
    enrolled = db.session.execute(
        select(Enrollment.user_id).where(Enrollment.course_id == assignment.course_id)
    ).scalars().all()
    flash.send_flash(enrolled, text, level="success", link_url=link_url, link_text="See your grade")
    emit("flash", {"assignment_id": assignment.id, "text": text, "level": "success",
                   "link_url": link_url, "link_text": "See your grade"},
         [f"assignment.{assignment.id}"])


def enqueue_grade_emails(assignment):
    announced = db.session.execute(
        select(Grade.submission_id)
        .where(Grade.submission_id.in_(markable_ids(assignment.id)),
               Grade.notified_at.is_not(None))
    ).scalars().all()
    sent = set(db.session.execute(
        select(OutboxEmail.dedupe_key)
        .where(OutboxEmail.dedupe_key.in_([grade_email_key(s) for s in announced]),
               OutboxEmail.sent_at.is_not(None))
    ).scalars()) if announced else set()
    return sum(enqueue_grade_email(s) for s in announced if grade_email_key(s) not in sent)


def grade_email_key(submission_id):
    return f"grade:{submission_id}"


def enqueue_grade_email(submission_id):
    """Queue the student's grade email unless a job for it is already waiting or running."""
    redis = get_redis()
    job_id = f"grade-email-{submission_id}"
    try:
        if Job.fetch(job_id, connection=redis).get_status(refresh=False) in LIVE_JOB_STATUSES:
            return False
    except NoSuchJobError:
        pass
    retry = retry_policy(EMAIL_RETRY_DELAYS)
    Queue(EMAIL_QUEUE, connection=redis).enqueue(
        "jobs.grades.send_grade_email", submission_id, job_id=job_id,
        job_timeout=EMAIL_TIMEOUT, retry=retry, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
        description=f"grade email for submission {submission_id}",
    )
    return True


def grade_email_body(submission, grade, public_url):
    assignment = submission.assignment
    link = f"{public_url.rstrip('/')}/submissions/{submission.id}"
    feedback = f"\nFeedback from your marker:\n{grade.feedback}\n" if grade.feedback else ""
    return (
        f"Hello {submission.student.display_name},\n\n"
        f"Grades for {assignment.course.code}: {assignment.title} are out.\n\n"
        f"Your grade: {grade.score:g} / {assignment.max_score}\n"
        f"{feedback}\n"
        f"See it with your submission (receipt #{submission.id}) at:\n{link}\n"
    )


def send_grade_email(submission_id):
    submission = db.session.get(Submission, submission_id)
    grade = submission.released_grade if submission is not None else None
    if grade is None or grade.notified_at is None:
        log.info("event=grade_email_skipped submission_id=%s reason=not_released", submission_id)
        return "not released"
    assignment = submission.assignment
    row = mailer.outbox_row(
        grade_email_key(submission.id),
        submission.student.email,
        f"Grade: {assignment.course.code} {assignment.title}",
        grade_email_body(submission, grade, current_app.config["PUBLIC_URL"]),
    )
    detail = mailer.deliver(row, current_app.config)
    log.info("event=grade_email submission_id=%s job_id=%s detail=%r",
             submission_id, get_current_job().id if get_current_job() else None, detail)
    return detail
