"""Grade release on the `grades` queue, and the one email per student that follows on the
`email` queue. Both are safe to run twice: the database decides what still has to happen."""

import logging
from datetime import timedelta

from flask import current_app
from rq import get_current_job
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app import flash
from app.events.publisher import emit
from app.events.topics import assignment_topic
from app.extensions import db
from app.grades.marking import emit_grade, emit_marking, markable_ids
from app.grades.release_jobs import enqueue_grade_email, grade_email_key
from app.links import external_url_for, path_for
from app.models import (
    Assignment,
    Enrollment,
    Event,
    EventTopic,
    Grade,
    OutboxEmail,
    Submission,
    utcnow,
)
from app.pipeline import retry_no_more
from app.services import mailer
from app.steps import Refused

log = logging.getLogger(__name__)

# rq-scheduler moves a job when its whole second comes round, possibly just before our clock.
CLOCK_SKEW = timedelta(seconds=2)


def release(assignment_id):
    job = get_current_job()
    job_id = job.id if job is not None else None
    outcome = release_grades(assignment_id, job_id)
    log.info("event=grade_release assignment_id=%s job_id=%s outcome=%s",
             assignment_id, job_id, outcome)
    return outcome


def release_grades(assignment_id, job_id):
    """Release if this job is still the assignment's release and it is due; then tell every
    student whose grade has not been announced yet, and announce the release once."""
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
    if won or announced:
        emit_marking(assignment)
    # The grades go out with this commit; the banners for everyone follow in their own.
    db.session.commit()
    flashed = announce_release(assignment)
    queued = enqueue_grade_emails(assignment)
    return (f"{'released' if won else 'already released'}; {announced} grades announced, "
            f"{flashed} flash messages, {queued} emails queued")


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
    """"Grades for X are out" to everyone enrolled, and on assignment.<id>, exactly once."""
    topic = assignment_topic(assignment.id)
    # Serialises announcers on PostgreSQL; SQLite allows one writer at a time anyway.
    db.session.execute(select(Assignment.id).where(Assignment.id == assignment.id)
                       .with_for_update())
    done = db.session.execute(
        select(EventTopic.event_id).join(Event)
        .where(EventTopic.topic == topic, Event.type == "flash").limit(1)
    ).first()
    if done:
        db.session.rollback()
        return 0
    text = f"Grades for {assignment.course.code}: {assignment.title} are out"
    enrolled = db.session.execute(
        select(Enrollment.user_id, Enrollment.role)
        .where(Enrollment.course_id == assignment.course_id)
    ).all()
    graded = dict(db.session.execute(
        select(Submission.student_id, Submission.id)
        .where(Submission.id.in_(markable_ids(assignment.id)),
               Submission.id.in_(select(Grade.submission_id)))
    ).all())
    # Each goes where they would look next: their graded work, the assignment, or marking.
    staff = [user_id for user_id, role in enrolled if role == "staff"]
    ungraded = [user_id for user_id, role in enrolled if role != "staff" and user_id not in graded]
    marking = path_for("grades.marking", assignment_id=assignment.id)
    assignment_page = path_for("submissions.assignment", assignment_id=assignment.id)
    flash.send_flash(staff, text, level="success", link_url=marking, link_text="Open marking")
    flash.send_flash(ungraded, text, level="success", link_url=assignment_page,
                     link_text="Open the assignment")
    for user_id, role in enrolled:
        if role != "staff" and user_id in graded:
            flash.send_flash([user_id], text, level="success", link_text="See your grade",
                             link_url=path_for("submissions.detail",
                                               submission_id=graded[user_id]))
    emit("flash", {"assignment_id": assignment.id, "text": text, "level": "success",
                   "link_url": assignment_page, "link_text": "Open the assignment"}, [topic])
    db.session.commit()
    return len(enrolled)


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


def grade_email_body(submission, grade, public_url):
    assignment = submission.assignment
    link = external_url_for(public_url, "submissions.detail", submission_id=submission.id)
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
    job = get_current_job()
    try:
        detail = mailer.deliver(row, current_app.config)
    except Refused as refused:
        if job is not None:
            retry_no_more(job)  # the same again would be refused; the reconciler tries later
        log.warning("event=grade_email_refused submission_id=%s reason=%r",
                    submission_id, str(refused))
        raise
    log.info("event=grade_email submission_id=%s job_id=%s detail=%r",
             submission_id, job.id if job is not None else None, detail)
    return detail
