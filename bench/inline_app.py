"""The baseline the queued intake is measured against: the same app, with one more upload URL
that does the same intake and then runs every pipeline step, in order, inside the request,
through the same job runner the workers use. Served by gunicorn like wsgi:app:

    gunicorn --config gunicorn.conf.py bench.inline_app:app
"""

from flask import jsonify, request

from app import create_app
from app.api import ApiError
from app.api.routes import require_user, submission_json
from app.extensions import csrf, db
from app.models import Assignment
from app.steps import STEPS
from app.submissions.intake import IntakeError, accept_upload, check_readable_form
from jobs.runner import run_step

app = create_app()


@app.post("/inline/assignments/<int:assignment_id>/submissions")
@csrf.exempt
def submit_and_process(assignment_id):
    user = require_user()
    assignment = db.session.get(Assignment, assignment_id)
    try:
        check_readable_form(request)
        submission, _ = accept_upload(user, assignment, request.files.get("file"),
                                      request.headers.get("Idempotency-Key"))
    except IntakeError as exc:
        return jsonify({"error": {"code": exc.code, "message": exc.message}}), exc.status, (
            {"Retry-After": str(exc.retry_after)} if exc.retry_after else {})
    # The queued jobs accept_upload and each step leave behind are never run: a step that is
    # already done makes its job a no-op.
    for step in STEPS:
        run_step(submission.id, step.name)
    db.session.refresh(submission)
    return jsonify(submission_json(submission, user)), 201


@app.errorhandler(ApiError)
def _api_error(exc):
    return jsonify({"error": {"code": exc.code, "message": exc.message}}), exc.status
