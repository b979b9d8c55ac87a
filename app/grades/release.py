"""Saving marks and releasing grades: at once, or at a time given in the course's time zone,
changed or cancelled until then. The assignment row is the truth (`release_at`, `released_at`,
`release_job_id`); Redis only holds the job that acts on it, and the reconciler restores a
lost one."""

import logging
import math
import uuid
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq_scheduler import Scheduler
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app.events.publisher import emit
from app.events.topics import submission_topics
from app.extensions import db, get_redis
from app.grades.marking import emit_grade, emit_marking, is_markable, markable_ids
from app.models import Assignment, Grade, utcnow
from app.pipeline import carry_policy, enqueue
from app.steps import JOBS

log = logging.getLogger(__name__)

MAX_FEEDBACK = 10_000
# A restored release this close to now is queued at once rather than through the scheduler.
SCHEDULER_LEAD = timedelta(seconds=2)
# A scheduler polls every few seconds; a due job left this long has nobody to move it.
SCHEDULER_STALLED = timedelta(seconds=60)

# The release job and the grade email job (jobs/grades.py); their policy (queue, time limit,
# retries, TTLs) is in app/steps.py's table.
RELEASE = JOBS["release"]
GRADE_EMAIL = JOBS["grade_email"]
LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                     JobStatus.STARTED}


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
    redis = get_redis()
    job_id = grade_email_job_id(submission_id)
    try:
        if Job.fetch(job_id, connection=redis).get_status(refresh=False) in LIVE_JOB_STATUSES:
            return False
    except NoSuchJobError:
        pass
    enqueue(GRADE_EMAIL, submission_id, job_id=job_id,
            description=f"grade email for submission {submission_id}")
    return True


class GradeError(ValueError):
    """A mark that cannot be saved; the message is shown to the marker."""


class NotMarkable(GradeError):
    """The submission is not the one marked for its student (a newer one exists, or rejected)."""


class ReleaseError(ValueError):
    """A release that cannot be made or changed; the message is shown to the marker."""


def parse_score(raw, max_score):
    if raw is None or isinstance(raw, bool) or (isinstance(raw, str) and not raw.strip()):
        raise GradeError("Enter a score.")
    try:
        score = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise GradeError("The score must be a number.") from None
    if not math.isfinite(score) or not 0 <= score <= max_score:
        raise GradeError(f"The score must be between 0 and {max_score}.")
    return round(score, 2)


def save_grade(submission, score, feedback, marker):
    """Save a mark; once grades are out the student sees it at once (by email the first time)."""
    assignment = submission.assignment
    if not is_markable(submission):
        raise NotMarkable("Only the student's latest accepted submission is marked.")
    score = parse_score(score, assignment.max_score)
    if feedback is None:
        feedback = ""
    if not isinstance(feedback, str):
        raise GradeError("Feedback must be text.")
    feedback = feedback.strip()
    if len(feedback) > MAX_FEEDBACK:
        raise GradeError(f"Feedback may be at most {MAX_FEEDBACK} characters.")

    grade = submission.grade
    if grade is None:
        grade = Grade(submission=submission, score=score)
        db.session.add(grade)
    grade.score = score
    grade.feedback = feedback
    grade.marker_id = marker.id
    first_news = tell_student_if_released(grade)
    db.session.commit()
    # A release may have committed while this mark was being saved: its announcement missed it.
    if not first_news and grade.notified_at is None:
        first_news = tell_student_if_released(grade)
        db.session.commit()
    emit_marking(assignment, grade)
    db.session.commit()
    if first_news:
        enqueue_grade_email(submission.id)
    return grade


def tell_student_if_released(grade):
    """Send the grade live to the student if grades are out; True if this is its first showing."""
    assignment = grade.submission.assignment
    db.session.flush()
    db.session.refresh(assignment, ["released_at"])
    if assignment.released_at is None:
        return False
    first = db.session.execute(
        update(Grade).where(Grade.id == grade.id, Grade.notified_at.is_(None))
        .values(notified_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(grade)
    emit_grade(grade, assignment)
    return bool(first)


def release_state(assignment, now=None):
    now = now or utcnow()
    if assignment.released_at is not None:
        return "released"
    if assignment.release_at is None:
        return "unscheduled"
    return "scheduled" if assignment.release_at > now else "releasing"


def _set_release(assignment, release_at):
    """Point the assignment at a new release job (or none); the old job becomes stale."""
    old_job_id = assignment.release_job_id
    job_id = uuid.uuid4().hex if release_at is not None else None
    changed = db.session.execute(
        update(Assignment)
        .where(Assignment.id == assignment.id, Assignment.released_at.is_(None))
        .values(release_at=release_at, release_job_id=job_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    db.session.refresh(assignment)
    if not changed:
        raise ReleaseError("Grades for this assignment are already released.")
    if old_job_id:
        _redis_best_effort(cancel_release_job, old_job_id)
    return job_id


def _redis_best_effort(action, *args, **kwargs):
    # The database already holds the decision; the reconciler repairs Redis if this fails.
    try:
        action(*args, **kwargs)
    except RedisError as exc:
        log.warning("event=release_redis_error action=%s error=%r", action.__name__, exc)


def release_now(assignment):
    """Queue the release at once; False if grades were already out."""
    if assignment.released_at is not None:
        return False
    job_id = _set_release(assignment, utcnow().replace(microsecond=0))
    _redis_best_effort(enqueue_release, assignment.id, job_id)
    log.info("event=release_requested assignment_id=%s job_id=%s", assignment.id, job_id)
    return True


def schedule_release(assignment, at):
    """Release at `at` (aware); replaces any earlier schedule."""
    at = at.astimezone(UTC).replace(microsecond=0)
    if at <= utcnow():
        raise ReleaseError("Choose a release time in the future.")
    job_id = _set_release(assignment, at)
    _redis_best_effort(enqueue_release, assignment.id, job_id, at=at)
    log.info("event=release_scheduled assignment_id=%s job_id=%s release_at=%s",
             assignment.id, job_id, at.isoformat())


def withdraw_release(assignment):
    """Hide released grades from students again (emails already sent stay sent); False if
    grades were not out. Releasing again shows them again, without a second email."""
    withdrawn = db.session.execute(
        update(Assignment)
        .where(Assignment.id == assignment.id, Assignment.released_at.is_not(None))
        .values(released_at=None, release_at=None, release_job_id=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not withdrawn:
        db.session.rollback()
        return False
    shown = db.session.execute(
        select(Grade).where(Grade.submission_id.in_(markable_ids(assignment.id)),
                            Grade.notified_at.is_not(None))
        .options(selectinload(Grade.submission))
    ).scalars().all()
    for grade in shown:
        grade.notified_at = None
        emit("grade", {"submission_id": grade.submission_id, "withdrawn": True},
             submission_topics(grade.submission), grade.submission_id)
    db.session.flush()
    db.session.refresh(assignment)
    emit_marking(assignment)
    db.session.commit()
    log.info("event=release_withdrawn assignment_id=%s grades=%s", assignment.id, len(shown))
    return True


def cancel_release(assignment):
    if assignment.released_at is not None:
        raise ReleaseError("Grades for this assignment are already released.")
    if assignment.release_at is None:
        return False
    _set_release(assignment, None)
    log.info("event=release_cancelled assignment_id=%s", assignment.id)
    return True


def course_time(naive, tz):
    """A wall-clock time typed by a marker, in the course's zone, as an aware UTC time."""
    local = naive.replace(tzinfo=tz)
    if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise ReleaseError(f"{naive:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks "
                           "change then. Choose another time.")
    return local.astimezone(UTC)


def parse_iso_time(raw):
    if not isinstance(raw, str):
        raise ReleaseError("`at` must be an ISO-8601 date and time.")
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ReleaseError("`at` must be an ISO-8601 date and time.") from None
    if at.tzinfo is None:
        raise ReleaseError("`at` needs a UTC offset, for example 2030-01-31T09:00:00Z.")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # an offset that pushes the time past year 1 or 9999
        raise ReleaseError("`at` must be an ISO-8601 date and time.") from None


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
