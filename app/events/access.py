"""Who may follow which live-event topic, and what of an event each follower may see."""

from dataclasses import dataclass

from app.events.topics import parse_topic
from app.extensions import db
from app.models import Assignment, Course, Submission
from app.wording import for_student


def may_follow(user, topic):
    kind, number = parse_topic(topic)
    if user.is_admin:
        return True
    if kind == "user":
        return number == user.id
    if kind == "submission":
        submission = db.session.get(Submission, number)
        return submission is not None and submission.visible_to(user)
    if kind in ("assignment", "assignment_staff"):
        assignment = db.session.get(Assignment, number)
        if assignment is None:
            return False
        if kind == "assignment_staff":
            return user.is_staff_of(assignment.course_id)
        return user.course_role(assignment.course_id) is not None
    if kind in ("course", "course_staff"):
        if db.session.get(Course, number) is None:
            return False
        if kind == "course_staff":
            return user.is_staff_of(number)
        return user.course_role(number) is not None
    return False


@dataclass(frozen=True)
class Viewer:
    """What a stream needs to know about its user once the database session is gone."""

    user_id: int
    is_admin: bool
    staff_course_ids: frozenset

    @classmethod
    def of(cls, user):
        return cls(
            user_id=user.id,
            is_admin=user.is_admin,
            staff_course_ids=frozenset(
                e.course_id for e in user.enrollments if e.role == "staff"
            ),
        )


def shaped_for(viewer, type, data, course_of_submission):
    """The event as this viewer may see it: a step's raw error and the staff's wording of a
    step are for the course's staff only; its student reads the same facts in plain words.

    course_of_submission(submission_id) is asked only when the viewer is staff somewhere."""
    if type not in ("step", "submission") or not isinstance(data, dict):
        return data
    if viewer.is_admin or (
        viewer.staff_course_ids
        and course_of_submission(data.get("submission_id")) in viewer.staff_course_ids
    ):
        return data
    return for_student(type, {key: value for key, value in data.items() if key != "error"})
