"""Releasing grades: at once, or at a time given in the course's time zone, changed or
cancelled until then, or withdrawn after. The assignment row is the truth (`release_at`,
`released_at`, `release_job_id`); Redis only holds the job that acts on it
(app/grades/release_jobs.py), and the reconciler restores a lost one."""

import logging
import uuid
from datetime import UTC

from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app.events.publisher import emit
from app.events.topics import submission_topics
from app.extensions import db
from app.grades.marking import emit_marking, markable_ids
from app.grades.release_jobs import cancel_release_job, enqueue_release
from app.models import Assignment, Grade, utcnow

log = logging.getLogger(__name__)


class ReleaseError(ValueError):
    """A release that cannot be made or changed; the message is shown to the marker."""


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
