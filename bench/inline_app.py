"""The baseline the queued intake is measured against: the same app, with one more upload URL
that does the same intake and then runs every pipeline step, in order, inside the request,
through the same job runner the workers use. Served by gunicorn like wsgi:app:

    gunicorn --config gunicorn.conf.py bench.inline_app:app
"""

from flask import jsonify, request

from app import create_app
from app.api.routes import submission_json
from app.errors import RequestRefused, error_response
from app.extensions import csrf, db
from app.models import Assignment
from app.steps import STEPS
from app.submissions.access import require_user
from app.submissions.intake import accept_upload, check_readable_form
from jobs.runner import run_step

app = create_app()


@app.post("/inline/assignments/<int:assignment_id>/submissions")
@csrf.exempt
def submit_and_process(assignment_id):
    try:
        user = require_user()
        assignment = db.session.get(Assignment, assignment_id)
        check_readable_form(request)
        submission, _ = accept_upload(user, assignment, request.files.get("file"),
                                      request.headers.get("Idempotency-Key"))
    except RequestRefused as exc:
        return error_response(exc.status, exc.code, exc.message, exc.retry_after)
    # The queued jobs accept_upload and each step leave behind are never run: a step that is
    # already done makes its job a no-op.
    for step in STEPS:
        run_step(submission.id, step.name)
    db.session.refresh(submission)
    return jsonify(submission_json(submission, user)), 201
