"""What every page with a conversation on it shares (a course's, an assignment's, a private
thread's): drawn by templates/messages/_conversation.html."""

from flask import request

from app.messages.conversations import (
    MessageError,
    before_id,
    history,
    mark_read,
    pinned_message,
)


def conversation_page(conversation, user, error=None, draft=""):
    """What templates/messages/_conversation.html draws: a page of history (the newest, or the
    one before ?before=), the pinned announcement, and the form. Seeing the newest page marks
    the conversation read, unless the page is fetched only for its unread counts
    (?recount=1, by app/static/messages.js): nobody saw it then."""
    try:
        before = before_id(request.args.get("before"))
    except MessageError:
        before = None
    messages, has_older = history(conversation, before)
    if before is None and messages and not request.args.get("recount"):
        mark_read(user, conversation, messages[-1].id)
    return {
        "conversation": conversation, "messages": messages, "has_older": has_older,
        "pinned": pinned_message(conversation), "can_moderate": conversation.moderated_by(user),
        "live_topic": conversation.live_topic_for(user), "error": error, "draft": draft,
        "paged": before is not None,
    }


def error_answer(error):
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return error.status, headers
