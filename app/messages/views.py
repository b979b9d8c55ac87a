"""The conversation pages: a course's (with its assignments and private threads), and a
student's private thread with the course's staff. An assignment's conversation is part of the
assignment's own page. Anyone who may not read a conversation gets a 404."""

from flask import abort, redirect, render_template, request
from flask_login import current_user, login_required

from app.messages import bp
from app.messages.conversations import (
    MessageError,
    conversation_of,
    course_conversation,
    moderate,
    moderated_message,
    newest_message_id,
    post,
    private_conversation,
    private_threads,
    private_threads_key,
    unread_counts,
)
from app.messages.pages import conversation_page, error_answer
from app.submissions.access import assignments_for


@bp.route("/courses/<int:course_id>", methods=["GET", "POST"])
@login_required
def course(course_id):
    conversation = course_conversation(course_id, current_user)
    if conversation is None:
        abort(404)
    error, draft = None, ""
    if request.method == "POST":
        try:
            message = post(conversation, current_user, request.form.get("body", ""),
                           pin=request.form.get("pin") == "y")
        except MessageError as exc:
            error, draft = exc, request.form.get("body", "")
        else:
            return redirect(f"{conversation.page_url()}#message-{message.id}", 303)
    return _course_page(conversation, error, draft)


def _course_page(conversation, error, draft):
    course = conversation.course
    assignments = [a for a in assignments_for(current_user) if a.course_id == course.id]
    is_staff = current_user.is_staff_of(course.id)
    mine = private_conversation(course.id, current_user.id, current_user)
    counted_upto = newest_message_id()
    unread = unread_counts(
        current_user, [f"assignment.{a.id}" for a in assignments] + ([mine.key] if mine else []),
        [course.id] if is_staff else [])
    page = render_template(
        "messages/course.html", course=course, assignments=assignments, unread=unread,
        private=mine, threads=private_threads(course, current_user) if is_staff else None,
        discussion=conversation_page(conversation, current_user, error and error.message, draft),
        private_total=unread.get(private_threads_key(course.id), 0), counted_upto=counted_upto)
    return (page, *error_answer(error)) if error else page


@bp.route("/courses/<int:course_id>/private/<int:student_id>", methods=["GET", "POST"])
@login_required
def private(course_id, student_id):
    conversation = private_conversation(course_id, student_id, current_user)
    if conversation is None:
        abort(404)
    error, draft = None, ""
    if request.method == "POST":
        try:
            message = post(conversation, current_user, request.form.get("body", ""))
        except MessageError as exc:
            error, draft = exc, request.form.get("body", "")
        else:
            return redirect(f"{conversation.page_url()}#message-{message.id}", 303)
    page = render_template(
        "messages/private.html", course=conversation.course, student=conversation.student,
        discussion=conversation_page(conversation, current_user, error and error.message, draft))
    return (page, *error_answer(error)) if error else page


MODERATION = {"hide": {"hidden": True}, "pin": {"pinned": True}, "unpin": {"pinned": False}}


@bp.post("/messages/<int:message_id>")
@login_required
def moderate_message(message_id):
    message = moderated_message(message_id, current_user)
    if message is None:
        abort(404)
    change = MODERATION.get(request.form.get("action"))
    if change is None:
        abort(400, "Choose hide, pin or unpin.")
    try:
        moderate(message, current_user, **change)
    except MessageError as exc:
        abort(exc.status, exc.message)
    return redirect(conversation_of(message).page_url(), 303)
