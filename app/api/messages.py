"""Conversations over the API: read a page of history (newest first page, then `before` an id
for older ones), post, and for the course's staff pin, unpin, hide and show again. Anyone who
may not read a conversation gets a 404, as if it did not exist."""

from flask import jsonify, request

from app.api import bp
from app.api.grades import json_object
from app.errors import RequestRefused
from app.messages.conversations import (
    MessageError,
    assignment_conversation,
    before_id,
    conversation_of,
    course_conversation,
    history,
    mark_read,
    message_json,
    moderate,
    moderated_message,
    page_size,
    pinned_message,
    post,
    private_conversation,
    visible_message,
)
from app.submissions.access import require_user


def _found(conversation):
    if conversation is None:
        raise RequestRefused(404, "not_found", "No such conversation.")
    return conversation


def _page(conversation, user):
    try:
        before = before_id(request.args.get("before"))
        messages, has_older = history(conversation, before, page_size(request.args.get("limit")))
    except MessageError as exc:
        raise RequestRefused(exc.status, exc.code, exc.message) from None
    # Reading the newest page is reading the conversation.
    if before is None and messages:
        mark_read(user, conversation, messages[-1].id)
    pinned = pinned_message(conversation)
    return jsonify({
        "conversation": conversation.key,
        "messages": [message_json(message) for message in messages],
        "has_older": has_older,
        "pinned": message_json(pinned) if pinned else None,
    })


def _post(conversation, user):
    body = json_object()
    pin = body.get("pin", False)
    if not isinstance(pin, bool):
        raise RequestRefused(400, "bad_request", "pin is true or false.")
    try:
        message = post(conversation, user, body.get("body"), pin=pin)
    except MessageError as exc:
        raise RequestRefused(exc.status, exc.code, exc.message, exc.retry_after) from None
    return jsonify(message_json(message)), 201


@bp.get("/courses/<int:course_id>/messages")
def course_messages(course_id):
    user = require_user()
    return _page(_found(course_conversation(course_id, user)), user)


@bp.post("/courses/<int:course_id>/messages")
def post_course_message(course_id):
    user = require_user()
    return _post(_found(course_conversation(course_id, user)), user)


@bp.get("/assignments/<int:assignment_id>/messages")
def assignment_messages(assignment_id):
    user = require_user()
    return _page(_found(assignment_conversation(assignment_id, user)), user)


@bp.post("/assignments/<int:assignment_id>/messages")
def post_assignment_message(assignment_id):
    user = require_user()
    return _post(_found(assignment_conversation(assignment_id, user)), user)


@bp.get("/courses/<int:course_id>/private/<int:student_id>/messages")
def private_messages(course_id, student_id):
    user = require_user()
    return _page(_found(private_conversation(course_id, student_id, user)), user)


@bp.post("/courses/<int:course_id>/private/<int:student_id>/messages")
def post_private_message(course_id, student_id):
    user = require_user()
    return _post(_found(private_conversation(course_id, student_id, user)), user)


@bp.patch("/messages/<int:message_id>")
def patch_message(message_id):
    user = require_user()
    message = moderated_message(message_id, user)
    if message is None:
        raise RequestRefused(404, "not_found", "No such message.")
    body = json_object()
    change = {name: body[name] for name in ("hidden", "pinned") if name in body}
    if not change or not all(isinstance(value, bool) for value in change.values()):
        raise RequestRefused(400, "bad_request", "Send hidden and/or pinned, each true or false.")
    try:
        moderate(message, user, **change)
    except MessageError as exc:
        raise RequestRefused(exc.status, exc.code, exc.message) from None
    return jsonify(message_json(message))


@bp.post("/messages/<int:message_id>/read")
def read_message(message_id):
    """The page has shown this message (it arrived live): the conversation is read up to it."""
    user = require_user()
    message = visible_message(message_id, user)
    if message is None:
        raise RequestRefused(404, "not_found", "No such message.")
    mark_read(user, conversation_of(message), message.id)
    return jsonify({"conversation": message.conversation, "last_read_id": message.id})
