from flask import jsonify, request, url_for

from app.api import bp
from app.auth.views import TooManyAttempts, authenticate
from app.deadlines import deadlines_for
from app.errors import RequestRefused
from app.extensions import db
from app.models import ApiToken, Assignment
from app.submissions.access import assignments_for, require_user, visible_submission
from app.submissions.intake import accept_upload, check_readable_form
from app.wording import student_step_detail, student_submission_detail


def iso(dt):
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def assignment_json(assignment, deadline):
    """`deadline` is the caller's own (app.deadlines): a student's extension, if granted."""
    return {
        "id": assignment.id,
        "course": assignment.course.code,
        "title": assignment.title,
        "due_at": iso(deadline.due_at),
        "cutoff_at": iso(deadline.cutoff_at),
        "extended": deadline.extended,
        "allowed_types": assignment.allowed_extensions,
        "max_size_mb": assignment.max_size_mb,
        "max_score": assignment.max_score,
        "open": deadline.is_open(),
        "grades_released": assignment.released_at is not None,
    }


def grade_json(grade):
    if grade is None:
        return None
    return {"score": grade.score, "feedback": grade.feedback, "updated_at": iso(grade.updated_at)}


def submission_json(submission, viewer):
    staff = viewer.is_staff_of(submission.assignment.course_id)
    grade = submission.grade if staff else submission.released_grade
    return {
        "id": submission.id,
        "assignment_id": submission.assignment_id,
        "student_id": submission.student_id,
        "status": submission.status,
        "status_detail": submission.status_detail if staff
        else student_submission_detail(submission.status, submission.status_detail),
        "filename": submission.filename,
        "size": submission.size,
        "sha256": submission.sha256,
        "received_at": iso(submission.received_at),
        "late": submission.late,
        "steps": [
            {
                "name": step.name,
                "status": step.status,
                "attempts": step.attempts,
                "detail": step.detail if staff else student_step_detail(
                    step.name, step.status, step.detail, submission.id),
                **({"error": step.last_error} if staff else {}),
            }
            for step in submission.steps
        ],
        "similarity": submission.similarity,
        "thumbnail_url": url_for("submissions.thumbnail", submission_id=submission.id)
        if submission.thumbnail_path and submission.status != "rejected" else None,
        "grade": grade_json(grade),
    }


@bp.post("/tokens")
def create_token():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestRefused(400, "bad_request", "Send JSON with email and password.")
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        raise RequestRefused(400, "bad_request", "Send JSON with email and password.")
    try:
        user = authenticate(email, password)
    except TooManyAttempts as exc:
        raise RequestRefused(429, "rate_limited", str(exc), exc.wait) from None
    if user is None:
        raise RequestRefused(401, "invalid_credentials", "That email and password do not match.")
    token = ApiToken.issue(user)
    db.session.commit()
    return jsonify({"token": token}), 201


@bp.get("/assignments")
def list_assignments():
    user = require_user()
    assignments = assignments_for(user)
    deadlines = deadlines_for(assignments, user.id)
    return jsonify({"assignments": [assignment_json(a, deadlines[a.id]) for a in assignments]})


@bp.post("/assignments/<int:assignment_id>/submissions")
def create_submission(assignment_id):
    user = require_user()
    assignment = db.session.get(Assignment, assignment_id)
    check_readable_form(request)
    submission, created = accept_upload(
        user, assignment, request.files.get("file"), request.headers.get("Idempotency-Key")
    )
    response = jsonify(submission_json(submission, user))
    response.status_code = 202
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = url_for("api.get_submission", submission_id=submission.id)
    return response


@bp.get("/submissions/<int:submission_id>")
def get_submission(submission_id):
    user = require_user()
    return jsonify(submission_json(visible_submission(submission_id, user), user))
