"""API routes for marking and grade release (staff of the course; anyone else gets a 404)."""

from flask import jsonify, request

from app.api import bp
from app.api.routes import iso
from app.errors import RequestRefused
from app.grades.marks import GradeError, NotMarkable, save_grade
from app.grades.release import (
    ReleaseError,
    cancel_release,
    release_now,
    release_state,
    schedule_release,
)
from app.grades.times import parse_iso_time
from app.submissions.access import require_user, staff_assignment, staff_submission


def staff_grade_json(grade):
    submission = grade.submission
    return {
        "submission_id": submission.id,
        "score": grade.score,
        "max_score": submission.assignment.max_score,
        "feedback": grade.feedback,
        "marker": grade.marker.email if grade.marker else None,
        "updated_at": iso(grade.updated_at),
        "released": grade.notified_at is not None,
    }


def release_json(assignment):
    return {
        "assignment_id": assignment.id,
        "state": release_state(assignment),
        "release_at": iso(assignment.release_at),
        "released_at": iso(assignment.released_at),
    }


def json_object():
    body = request.get_json(silent=True)
    if body is None and not request.get_data():
        return {}
    if not isinstance(body, dict):
        raise RequestRefused(400, "bad_request", "Send a JSON object.")
    return body


@bp.put("/submissions/<int:submission_id>/grade")
def put_grade(submission_id):
    user = require_user()
    submission = staff_submission(submission_id, user)
    body = json_object()
    try:
        grade = save_grade(submission, body.get("score"), body.get("feedback", ""), user)
    except NotMarkable as exc:
        raise RequestRefused(409, "not_latest_submission", str(exc)) from None
    except GradeError as exc:
        raise RequestRefused(400, "invalid_grade", str(exc)) from None
    return jsonify(staff_grade_json(grade))


@bp.post("/assignments/<int:assignment_id>/release")
def post_release(assignment_id):
    user = require_user()
    assignment = staff_assignment(assignment_id, user)
    at = json_object().get("at")
    try:
        if at is None:
            if not release_now(assignment):
                return jsonify(release_json(assignment))
        else:
            schedule_release(assignment, parse_iso_time(at))
    except ReleaseError as exc:
        status, code = (409, "already_released") if assignment.released_at else \
            (400, "invalid_release_time")
        raise RequestRefused(status, code, str(exc)) from None
    return jsonify(release_json(assignment)), 202


@bp.delete("/assignments/<int:assignment_id>/release")
def delete_release(assignment_id):
    user = require_user()
    assignment = staff_assignment(assignment_id, user)
    try:
        cancel_release(assignment)
    except ReleaseError as exc:
        raise RequestRefused(409, "already_released", str(exc)) from None
    return jsonify(release_json(assignment))
