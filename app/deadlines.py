"""A student's own deadline on an assignment: the assignment's due time and cut-off, or the
extension granted to that student (by the course's staff on the marking page, or by the
student-records system). Intake, the late flag, the pages, the receipt and the API ask here.

Granting and withdrawing take the time the decision was made and, for a message from another
system, its id: the same message applied twice, or one decided before the latest decision
arriving late, changes nothing."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from app.events.publisher import emit
from app.events.topics import user_topic
from app.extensions import db
from app.flash import send_flash
from app.links import path_for
from app.models import Extension, User, utcnow
from app.templating import local_time

MAX_REASON = 500


class ExtensionError(ValueError):
    """Why an extension cannot be granted, in words for the member of staff granting it."""


@dataclass(frozen=True)
class Deadline:
    due_at: datetime
    cutoff_at: datetime | None
    extension: Extension | None = None

    @property
    def extended(self):
        return self.extension is not None

    def is_open(self, at=None):
        return self.cutoff_at is None or (at or utcnow()) <= self.cutoff_at

    def is_late(self, at=None):
        return (at or utcnow()) > self.due_at


def _of(assignment, extension):
    if extension is None:
        return Deadline(assignment.due_at, assignment.cutoff_at)
    # Should the class's deadline later move past the extension, the student keeps the later.
    due_at = max(extension.due_at, assignment.due_at)
    cutoff_at = (None if extension.cutoff_at is None or assignment.cutoff_at is None
                 else max(extension.cutoff_at, assignment.cutoff_at))
    return Deadline(due_at, cutoff_at, extension)


def _in_force(at=None):
    if at is None:
        return Extension.ended_at.is_(None)
    return (Extension.granted_at <= at) & or_(Extension.ended_at.is_(None),
                                              Extension.ended_at > at)


def extension_in_force(assignment_id, student_id, at=None):
    return db.session.execute(
        select(Extension).where(Extension.assignment_id == assignment_id,
                                Extension.student_id == student_id, _in_force(at))
        .order_by(Extension.id.desc()).limit(1)
    ).scalar_one_or_none()


def deadline_for(assignment, student_id, at=None):
    """The deadline this student works to now, or the one they worked to at `at` (a receipt's
    time: a later grant or withdrawal does not rewrite what a receipt said)."""
    return _of(assignment, extension_in_force(assignment.id, student_id, at))


def deadlines_for(assignments, student_id):
    """{assignment id: Deadline} for one student's list of assignments, in one query."""
    ids = [assignment.id for assignment in assignments]
    extensions = {
        extension.assignment_id: extension for extension in db.session.execute(
            select(Extension).where(Extension.student_id == student_id,
                                    Extension.assignment_id.in_(ids), _in_force())
        ).scalars()
    } if ids else {}
    return {a.id: _of(a, extensions.get(a.id)) for a in assignments}


def extensions_of(assignment):
    """{student id: Extension} of the grants in force on this assignment."""
    return {
        extension.student_id: extension for extension in db.session.execute(
            select(Extension).where(Extension.assignment_id == assignment.id, _in_force())
        ).scalars()
    }


def _latest_decision(assignment_id, student_id):
    rows = db.session.execute(
        select(Extension.decided_at, Extension.end_decided_at)
        .where(Extension.assignment_id == assignment_id, Extension.student_id == student_id)
    ).all()
    times = [t for row in rows for t in row if t is not None]
    return max(times, default=None)


def _check(assignment, student, due_at, cutoff_at, reason, now):
    if student is None or student.course_role(assignment.course_id) != "student":
        raise ExtensionError(f"Choose a student enrolled in {assignment.course.code}.")
    tz = assignment.course.tz
    if due_at < assignment.due_at:
        raise ExtensionError("An extension cannot be due before the assignment itself, "
                             f"{local_time(assignment.due_at, tz)}.")
    if assignment.cutoff_at is not None and cutoff_at is None:
        raise ExtensionError("Give a new cut-off too: this assignment closes at its cut-off. "
                             "It may be the same as the new due time.")
    if cutoff_at is not None and cutoff_at < due_at:
        raise ExtensionError("The cut-off cannot be before the due time.")
    if assignment.cutoff_at is not None and cutoff_at < assignment.cutoff_at:
        raise ExtensionError("An extension cannot close before the assignment itself, "
                             f"{local_time(assignment.cutoff_at, tz)}.")
    if cutoff_at is not None and cutoff_at <= now:
        raise ExtensionError(f"That cut-off, {local_time(cutoff_at, tz)}, has already passed.")
    if len(reason) > MAX_REASON:
        raise ExtensionError(f"Keep the reason under {MAX_REASON} characters.")


def grant_extension(assignment, student, due_at, cutoff_at, granted_by=None, reason="",
                    source="staff", source_ref=None, decided_at=None):
    """Give `student` their own due time and cut-off on `assignment`, replacing a grant in
    force, and tell them (a live event and a flash message) once the transaction commits.
    Returns (the grant in force, whether anything changed)."""
    now = utcnow()
    decided_at = decided_at or now
    reason = (reason or "").strip()
    if source_ref is not None:
        applied = db.session.execute(
            select(Extension).filter_by(source_ref=source_ref)).scalar_one_or_none()
        if applied is not None:
            return applied, False
    current = extension_in_force(assignment.id, student.id) if student else None
    latest = _latest_decision(assignment.id, student.id) if student else None
    if latest is not None and decided_at < latest:
        return current, False
    _check(assignment, student, due_at, cutoff_at, reason, now)
    if current is not None:
        current.ended_at = now
        current.ended_by = granted_by
        current.end_reason = "replaced"
        current.end_decided_at = decided_at
        # The partial unique index allows one grant in force: end this one first.
        db.session.flush()
    extension = Extension(
        assignment=assignment, student=student, due_at=due_at, cutoff_at=cutoff_at,
        reason=reason, source=source, source_ref=source_ref, decided_at=decided_at,
        granted_by=granted_by, granted_at=now,
    )
    db.session.add(extension)
    db.session.flush()
    _announce(assignment, student, extension, changed=current is not None, by=granted_by)
    return extension, True


def withdraw_extension(assignment, student, withdrawn_by=None, decided_at=None):
    """End the student's grant in force: the assignment's own deadline applies again.
    Returns the withdrawn grant, or None when there was none (or a later decision stands)."""
    now = utcnow()
    decided_at = decided_at or now
    current = extension_in_force(assignment.id, student.id)
    if current is None or decided_at < _latest_decision(assignment.id, student.id):
        return None
    current.ended_at = now
    current.ended_by = withdrawn_by
    current.end_reason = "withdrawn"
    current.end_decided_at = decided_at
    db.session.flush()
    _announce(assignment, student, None, changed=True, by=withdrawn_by)
    return current


def deadline_payload(assignment, student_id, deadline, by=None):
    return {
        "assignment_id": assignment.id,
        "student_id": student_id,
        "due_at": deadline.due_at.isoformat(),
        "cutoff_at": deadline.cutoff_at.isoformat() if deadline.cutoff_at else None,
        "extended": deadline.extended,
        "by": by.display_name if by is not None else None,
    }


def _announce(assignment, student, extension, changed, by):
    deadline = _of(assignment, extension)
    emit("deadline", deadline_payload(assignment, student.id, deadline, by),
         [user_topic(student.id)])
    tz = assignment.course.tz
    name = f"{assignment.course.code}: {assignment.title}"
    closes = (f"; submissions close {local_time(deadline.cutoff_at, tz)}"
              if deadline.cutoff_at else "")
    if extension is None:
        text = (f"Your extension for {name} was withdrawn: it is due "
                f"{local_time(deadline.due_at, tz)} again{closes}.")
    else:
        text = (f"{'Your extension for' if changed else 'You have an extension for'} {name}"
                f"{' was changed' if changed else ''}: it is now due "
                f"{local_time(deadline.due_at, tz)}{closes}.")
    send_flash([student.id], text, level="warning" if extension is None else "success",
               link_url=path_for("submissions.assignment", assignment_id=assignment.id),
               link_text="Open the assignment")


def enrolled_student(assignment, student_id):
    student = db.session.get(User, student_id) if student_id else None
    if student is None or student.course_role(assignment.course_id) != "student":
        return None
    return student
