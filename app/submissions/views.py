import uuid

from flask import abort, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import HiddenField

from app.deadlines import deadline_for, deadlines_for
from app.errors import RequestRefused
from app.extensions import csrf, db
from app.messages.conversations import (
    MessageError,
    assignment_conversation,
    newest_message_id,
    post,
    private_conversation,
    private_threads_key,
    unread_counts,
)
from app.messages.pages import conversation_page, error_answer
from app.models import Submission
from app.steps import STEP_BY_NAME
from app.submissions import bp
from app.submissions.access import assignments_for, enrolled_assignment, visible_submission
from app.submissions.intake import accept_upload, check_readable_form, release_connection


class UploadForm(FlaskForm):
    # Minted when the page is drawn, so a double-clicked or resent form makes one submission.
    idempotency_key = HiddenField()


@bp.route("/")
@login_required
def index():
    assignments = assignments_for(current_user)
    courses = list({a.course.id: a.course for a in assignments}.values())
    conversations = [conversation for course in courses if (
        conversation := private_conversation(course.id, current_user.id, current_user))]
    staff_of = [course.id for course in courses if current_user.is_staff_of(course.id)]
    counted_upto = newest_message_id()
    unread = unread_counts(
        current_user,
        [f"assignment.{a.id}" for a in assignments] + [f"course.{c.id}" for c in courses]
        + [conversation.key for conversation in conversations], staff_of)
    return render_template("submissions/index.html", assignments=assignments,
                           deadlines=deadlines_for(assignments, current_user.id),
                           courses=courses, staff_of=staff_of, unread=unread,
                           private_keys={c.course.id: c.key for c in conversations},
                           counted_upto=counted_upto,
                           private_threads_key=private_threads_key)


def _assignment_page(assignment, form, error=None, status=200, discussion=None):
    mine = db.session.execute(
        db.select(Submission)
        .filter_by(assignment_id=assignment.id, student_id=current_user.id)
        .order_by(Submission.received_at.desc())
    ).scalars().all()
    if not form.idempotency_key.data or error is None:
        form.idempotency_key.data = uuid.uuid4().hex
    deadline = deadline_for(assignment, current_user.id)
    return render_template(
        "submissions/assignment.html", assignment=assignment, form=form,
        submissions=mine, counted=counted_of(mine), deadline=deadline,
        past_due=deadline.is_late(), error=error,
        role=current_user.course_role(assignment.course_id),
        discussion=discussion or conversation_page(
            assignment_conversation(assignment.id, current_user), current_user),
    ), status


def counted_of(submissions):
    """The one that is marked: the latest not rejected (as app.grades.marking has it)."""
    accepted = [s for s in submissions if s.status != "rejected"]
    return max(accepted, key=lambda s: s.id, default=None)


@bp.route("/assignments/<int:assignment_id>", methods=["GET", "POST"])
# The form checks its own CSRF token, after a broken upload has been told apart from a forgery.
@csrf.exempt
@login_required
def assignment(assignment_id):
    assignment = enrolled_assignment(assignment_id, current_user)
    if request.method == "POST":
        release_connection()  # the form reads the body as it is made
    form = UploadForm()
    if request.method == "POST":
        try:
            check_readable_form(request)
            if not form.validate_on_submit():
                return _assignment_page(assignment, form,
                                        "Your session expired; please try again.", 400)
            submission, _ = accept_upload(
                current_user, assignment, request.files.get("file"), form.idempotency_key.data
            )
        except RequestRefused as exc:
            if exc.status == 404:
                abort(404)
            page, status = _assignment_page(assignment, form, exc.message, exc.status)
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            return page, status, headers
        return redirect(url_for("submissions.detail", submission_id=submission.id), 303)
    return _assignment_page(assignment, form)


@bp.post("/assignments/<int:assignment_id>/messages")
@login_required
def post_message(assignment_id):
    """The form of the assignment's conversation, on the assignment's page."""
    conversation = assignment_conversation(assignment_id, current_user)
    if conversation is None:
        abort(404)
    body = request.form.get("body", "")
    try:
        message = post(conversation, current_user, body, pin=request.form.get("pin") == "y")
    except MessageError as exc:
        discussion = conversation_page(conversation, current_user, exc.message, body)
        page, _ = _assignment_page(conversation.assignment, UploadForm(formdata=None),
                                   discussion=discussion)
        return (page, *error_answer(exc))
    return redirect(url_for("submissions.assignment", assignment_id=assignment_id,
                            _anchor=f"message-{message.id}"), 303)


@bp.route("/submissions/<int:submission_id>")
@login_required
def detail(submission_id):
    submission = visible_submission(submission_id, current_user)
    theirs = db.session.execute(
        db.select(Submission).filter_by(assignment_id=submission.assignment_id,
                                        student_id=submission.student_id)
    ).scalars().all()
    return render_template(
        "submissions/detail.html", submission=submission, steps=STEP_BY_NAME,
        counted=counted_of(theirs),
        deadline=deadline_for(submission.assignment, submission.student_id,
                              at=submission.received_at),
        is_staff=current_user.is_staff_of(submission.assignment.course_id),
    )


@bp.route("/submissions/<int:submission_id>/file")
@login_required
def download(submission_id):
    submission = visible_submission(submission_id, current_user)
    if submission.status == "rejected" or not submission.stored_path:
        abort(404)
    return send_file(submission.stored_path, mimetype=submission.content_type,
                     as_attachment=True, download_name=submission.filename)


@bp.route("/submissions/<int:submission_id>/thumbnail")
@login_required
def thumbnail(submission_id):
    submission = visible_submission(submission_id, current_user)
    if submission.status == "rejected" or not submission.thumbnail_path:
        abort(404)
    response = send_file(submission.thumbnail_path, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=300"
    return response
