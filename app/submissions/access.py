"""Who may see what. Anything a user may not see is a 404, so its existence does not leak."""

from flask import abort
from flask_login import current_user

from app.extensions import db
from app.models import Assignment, Submission


def visible_submission_or_404(submission_id, user=None):
    user = user or current_user
    submission = db.session.get(Submission, submission_id)
    if submission is None or not submission.visible_to(user):
        abort(404)
    return submission


def enrolled_assignment_or_404(assignment_id, user=None):
    user = user or current_user
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None or (
        user.course_role(assignment.course_id) is None and not user.is_admin
    ):
        abort(404)
    return assignment


def assignments_for(user):
    course_ids = [e.course_id for e in user.enrollments]
    query = db.select(Assignment).order_by(Assignment.due_at)
    if not user.is_admin:
        query = query.where(Assignment.course_id.in_(course_ids))
    return db.session.execute(query).scalars().all()
