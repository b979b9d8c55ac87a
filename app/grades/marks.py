"""Saving a mark: checked, kept, and shown to its student at once if grades are already out
(by email the first time)."""

import math

from sqlalchemy import update

from app.extensions import db
from app.grades.marking import emit_grade, emit_marking, is_markable
from app.grades.release_jobs import enqueue_grade_email
from app.models import Grade, utcnow

MAX_FEEDBACK = 10_000


class GradeError(ValueError):
    """A mark that cannot be saved; the message is shown to the marker."""


class NotMarkable(GradeError):
    """The submission is not the one marked for its student (a newer one exists, or rejected)."""


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
