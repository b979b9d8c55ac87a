"""Every message of every conversation, for admins to read and moderate: hiding or showing one
again here is live on every open page of its conversation, as when staff do it."""

from flask import flash
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import FilterEmpty, FilterEqual, FilterLike
from flask_login import current_user

from app.admin.base import AdminModelView, counted
from app.extensions import db
from app.messages.conversations import moderate
from app.models import Course, Message


class MessageView(AdminModelView):
    # Messages are posted on the conversation pages, which deliver them live.
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("id", "course", "conversation", "author.email", "body", "created_at",
                   "pinned_at", "hidden_at")
    column_labels = {"author.email": "Author", "created_at": "Posted", "pinned_at": "Pinned",
                     "hidden_at": "Hidden", "hidden_by.email": "Hidden by",
                     "student.email": "Private thread of"}
    column_details_list = ("id", "course", "assignment", "student.email", "conversation",
                           "author.email", "body", "created_at", "pinned_at", "hidden_at",
                           "hidden_by.email")
    column_searchable_list = ("body", "author.email")
    column_filters = (
        FilterEqual(Course.code, "Course"),
        FilterLike(Message.conversation, "Conversation"),
        FilterEmpty(Message.hidden_at, "Hidden"),
        FilterEmpty(Message.pinned_at, "Pinned"),
        FilterEmpty(Message.student_id, "Private thread"),
    )
    column_default_sort = ("id", True)

    @action("hide", "Hide", "Hide the selected messages from everyone?")
    def hide(self, ids):
        self._moderate(ids, hidden=True, done="Hid")

    @action("unhide", "Show again", "Show the selected messages to their conversations again?")
    def unhide(self, ids):
        self._moderate(ids, hidden=False, done="Showed again")

    def _moderate(self, ids, hidden, done):
        messages = db.session.execute(
            db.select(Message).where(Message.id.in_([int(i) for i in ids]))).scalars().all()
        for message in messages:
            moderate(message, current_user, hidden=hidden)
        flash(f"{done} {counted(len(messages), 'message')}.", "success")
