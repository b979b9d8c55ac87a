"""What markers work from: one row per student, marking progress, and the events that carry
grades. Each student is marked on their latest accepted submission; earlier ones are listed
beside it, and a rejected upload (infected, unreadable) is never the one marked. A student who
has submitted nothing has a row too."""

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.events.publisher import emit
from app.events.topics import assignment_staff_topic, submission_topics
from app.extensions import db
from app.models import Enrollment, Grade, Submission, User


@dataclass
class MarkingRow:
    student: User
    submission: Submission | None
    earlier: list[Submission] = field(default_factory=list)

    @property
    def grade(self):
        return self.submission.grade if self.submission is not None else None


def marking_rows(assignment):
    submissions = db.session.execute(
        select(Submission)
        .where(Submission.assignment_id == assignment.id)
        .options(selectinload(Submission.grade).selectinload(Grade.marker),
                 selectinload(Submission.student))
        .order_by(Submission.id.desc())
    ).scalars().all()
    # Everyone enrolled as a student has a row, so staff see who has not submitted.
    enrolled = db.session.execute(
        select(User).join(Enrollment, Enrollment.user_id == User.id)
        .where(Enrollment.course_id == assignment.course_id, Enrollment.role == "student")
    ).scalars().all()
    rows = {student.id: MarkingRow(student, None) for student in enrolled}
    for submission in submissions:
        row = rows.setdefault(submission.student_id, MarkingRow(submission.student, None))
        if row.submission is None and submission.status != "rejected":
            row.submission = submission
        else:
            row.earlier.append(submission)
    return sorted(rows.values(), key=lambda r: (r.student.display_name.lower(), r.student.id))


def markable_ids(assignment_id):
    """Per student, the id of the submission that is marked: the latest one not rejected."""
    return (
        select(func.max(Submission.id))
        .where(Submission.assignment_id == assignment_id, Submission.status != "rejected")
        .group_by(Submission.student_id)
    )


def is_markable(submission):
    latest = db.session.execute(
        select(func.max(Submission.id)).where(
            Submission.assignment_id == submission.assignment_id,
            Submission.student_id == submission.student_id,
            Submission.status != "rejected",
        )
    ).scalar_one()
    return latest == submission.id


def marking_progress(assignment_id):
    markable = markable_ids(assignment_id).subquery()
    total = db.session.execute(select(func.count()).select_from(markable)).scalar_one()
    marked, released = db.session.execute(
        select(func.count(Grade.id), func.count(Grade.notified_at))
        .where(Grade.submission_id.in_(select(markable)))
    ).one()
    return {"marked": marked, "total": total, "released": released}


def grade_payload(grade, assignment):
    return {
        "submission_id": grade.submission_id,
        "score": grade.score,
        "max_score": assignment.max_score,
        "feedback": grade.feedback,
    }


def emit_grade(grade, assignment):
    """Tell the student (their submission page and their own topic) about a released grade."""
    submission = grade.submission
    emit("grade", grade_payload(grade, assignment), submission_topics(submission), submission.id)


def emit_marking(assignment, grade=None):
    """Progress, and the grade just saved, for every marker with the marking page open."""
    payload = {"assignment_id": assignment.id, "progress": marking_progress(assignment.id),
               "released_at": assignment.released_at.isoformat()
               if assignment.released_at else None}
    if grade is not None:
        payload.update(grade_payload(grade, assignment))
        payload["marker"] = grade.marker.display_name if grade.marker else None
        payload["notified"] = grade.notified_at is not None
    # No submission_id on the row: anything listed by submission must stay student-safe.
    emit("grade", payload, [assignment_staff_topic(assignment.id)])
