"""Who may see what, for the pages and the API alike. Anything a user may not see is a 404, so
its existence does not leak: the API answers a refusal in JSON, a page with its 404 page."""

from flask_login import current_user

from app.errors import RequestRefused
from app.extensions import db
from app.models import Assignment, Submission


def require_user():
    """The caller, by session or bearer token (pages redirect to login instead)."""
    if not current_user.is_authenticated:
        raise RequestRefused(401, "unauthorized", "Log in or send a bearer token.")
    return current_user


def visible_submission(submission_id, user):
    submission = db.session.get(Submission, submission_id)
    if submission is None or not submission.visible_to(user):
        raise RequestRefused(404, "not_found", "No such submission.")
    return submission


def staff_submission(submission_id, user):
    """A submission to an assignment of a course this user is staff of."""
    submission = db.session.get(Submission, submission_id)
    if submission is None or not user.is_staff_of(submission.assignment.course_id):
        raise RequestRefused(404, "not_found", "No such submission.")
    return submission


def enrolled_assignment(assignment_id, user):
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None or (
        user.course_role(assignment.course_id) is None and not user.is_admin
    ):
        raise RequestRefused(404, "not_found", "No such assignment.")
    return assignment


def staff_assignment(assignment_id, user):
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None or not user.is_staff_of(assignment.course_id):
        raise RequestRefused(404, "not_found", "No such assignment.")
    return assignment


def assignments_for(user):
    course_ids = [e.course_id for e in user.enrollments]
    query = db.select(Assignment).order_by(Assignment.due_at)
    if not user.is_admin:
        query = query.where(Assignment.course_id.in_(course_ids))
    return db.session.execute(query).scalars().all()
