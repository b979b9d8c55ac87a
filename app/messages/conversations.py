"""Conversations: each course's and each assignment's, open to everyone enrolled and to the
course's staff, and each student's private thread with the course's staff. Every change to a
message is an event on the conversation's topics, so open pages follow it live and a stream
that reconnects replays what it missed."""

import logging
from dataclasses import dataclass

from flask import current_app, url_for
from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from app import ratelimit
from app.events.publisher import emit
from app.events.topics import assignment_topic, course_staff_topic, course_topic, user_topic
from app.extensions import db
from app.flash import send_flash
from app.messages.text import BadMessage, clean_body, linkify
from app.models import (
    Assignment,
    Course,
    Enrollment,
    Event,
    EventTopic,
    Message,
    MessageRead,
    User,
    utcnow,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 30
MAX_PAGE_SIZE = 100
ANNOUNCEMENT_SHOWN = 160


class MessageError(Exception):
    def __init__(self, status, code, message, retry_after=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Conversation:
    course: Course
    assignment: Assignment | None = None
    # The student of a private thread with the course's staff.
    student: User | None = None

    @property
    def key(self):
        if self.student is not None:
            return f"course.{self.course.id}.private.{self.student.id}"
        if self.assignment is not None:
            return f"assignment.{self.assignment.id}"
        return f"course.{self.course.id}"

    @property
    def private(self):
        return self.student is not None

    @property
    def topics(self):
        """Where its events go: a private thread to its student and the course's staff; an
        assignment's to its followers and the course's (whose pages count what is unread)."""
        if self.private:
            return [user_topic(self.student.id), course_staff_topic(self.course.id)]
        if self.assignment is not None:
            return [assignment_topic(self.assignment.id), course_topic(self.course.id)]
        return [course_topic(self.course.id)]

    def live_topic_for(self, user):
        if self.private:
            return user_topic(user.id) if user.id == self.student.id \
                else course_staff_topic(self.course.id)
        return self.topics[0]

    @property
    def title(self):
        if self.private:
            return f"{self.course.code}: {self.student.display_name} and the course's staff"
        if self.assignment is not None:
            return f"{self.course.code}: {self.assignment.title}"
        return f"{self.course.code}: {self.course.title}"

    def readable_by(self, user):
        if user is None or not user.is_authenticated:
            return False
        if self.private:
            return user.is_staff_of(self.course.id) or (
                user.id == self.student.id and user.course_role(self.course.id) == "student")
        return user.is_admin or user.course_role(self.course.id) is not None

    def moderated_by(self, user):
        return user.is_staff_of(self.course.id)

    def page_url(self):
        if self.private:
            return url_for("messages.private", course_id=self.course.id,
                           student_id=self.student.id)
        if self.assignment is not None:
            return url_for("submissions.assignment", assignment_id=self.assignment.id,
                           _anchor="discussion")
        return url_for("messages.course", course_id=self.course.id)

    def post_url(self):
        if self.private or self.assignment is None:
            return self.page_url()
        return url_for("submissions.post_message", assignment_id=self.assignment.id)

    def api_url(self):
        if self.private:
            return url_for("api.private_messages", course_id=self.course.id,
                           student_id=self.student.id)
        if self.assignment is not None:
            return url_for("api.assignment_messages", assignment_id=self.assignment.id)
        return url_for("api.course_messages", course_id=self.course.id)


# --- finding a conversation: None when it does not exist or the user may not read it --------

def course_conversation(course_id, user):
    course = db.session.get(Course, course_id)
    return _readable(Conversation(course), user) if course else None


def assignment_conversation(assignment_id, user):
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None:
        return None
    return _readable(Conversation(assignment.course, assignment=assignment), user)


def private_conversation(course_id, student_id, user):
    course = db.session.get(Course, course_id)
    student = db.session.get(User, student_id)
    if course is None or student is None or student.course_role(course_id) != "student":
        return None
    return _readable(Conversation(course, student=student), user)


def conversation_of(message):
    return Conversation(message.course, assignment=message.assignment, student=message.student)


def _readable(conversation, user):
    return conversation if conversation.readable_by(user) else None


def visible_message(message_id, user):
    """A message the user can see: not hidden, in a conversation they may read."""
    message = db.session.get(Message, message_id)
    if message is None or message.hidden_at is not None:
        return None
    return message if conversation_of(message).readable_by(user) else None


def moderated_message(message_id, user):
    """A message, hidden or not, in a conversation this user moderates (the course's staff)."""
    message = db.session.get(Message, message_id)
    if message is None or not user.is_authenticated or not user.is_staff_of(message.course_id):
        return None
    return message


# --- what is shown ----------------------------------------------------------------------------

def message_json(message, change=None):
    hidden = message.hidden_at is not None
    shown = {
        "id": message.id,
        "conversation": message.conversation,
        "course_id": message.course_id,
        "assignment_id": message.assignment_id,
        "student_id": message.student_id,
        "author": {"id": message.author_id, "name": message.author.display_name,
                   "staff": message.author.is_staff_of(message.course_id)},
        # A hidden message's words go nowhere: not to pages, streams or replays.
        "body": "" if hidden else message.body,
        "html": "" if hidden else str(linkify(message.body)),
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
        "pinned": message.pinned_at is not None and not hidden,
        "hidden": hidden,
    }
    if change is not None:
        shown["change"] = change
    return shown


def history(conversation, before=None, limit=PAGE_SIZE):
    """Up to `limit` shown messages older than `before` (newest when None), oldest first, and
    whether there are older ones still."""
    query = (select(Message).where(Message.conversation == conversation.key,
                                   Message.hidden_at.is_(None))
             .order_by(Message.id.desc()).limit(limit + 1))
    if before is not None:
        query = query.where(Message.id < before)
    newest_first = db.session.scalars(query).all()
    return newest_first[:limit][::-1], len(newest_first) > limit


def pinned_message(conversation):
    return db.session.scalar(
        select(Message).where(Message.conversation == conversation.key,
                              Message.pinned_at.is_not(None), Message.hidden_at.is_(None))
        .order_by(Message.pinned_at.desc()).limit(1))


def page_size(raw):
    try:
        size = int(raw) if raw not in (None, "") else PAGE_SIZE
    except (TypeError, ValueError):
        raise MessageError(400, "bad_limit", f"limit is a number from 1 to {MAX_PAGE_SIZE}.") \
            from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise MessageError(400, "bad_limit", f"limit is a number from 1 to {MAX_PAGE_SIZE}.")
    return size


def before_id(raw):
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value < 10**18:
        raise MessageError(400, "bad_before", "before is the id of a message.")
    return value


# --- posting and moderating -------------------------------------------------------------------

def post(conversation, author, raw_body, pin=False):
    """Add a message (and pin it, for staff); it is live for everyone once this commits."""
    try:
        body = clean_body(raw_body)
    except BadMessage as exc:
        raise MessageError(400, exc.code, str(exc)) from None
    if pin:
        _check_pinnable(conversation, author)
    wait = ratelimit.wait_seconds("message", author.id, *current_app.config["MESSAGE_RATE_LIMIT"])
    if wait:
        raise MessageError(429, "rate_limited",
                           f"You are sending messages too fast; try again in {wait} s.", wait)
    message = Message(
        conversation=conversation.key, course=conversation.course,
        assignment=conversation.assignment, student=conversation.student, author=author,
        body=body)
    db.session.add(message)
    db.session.flush()
    emit("message", message_json(message, "posted"), conversation.topics)
    if pin:
        _pin(conversation, message, author)
    db.session.commit()
    log.info("event=message_posted message_id=%s conversation=%s author_id=%s pinned=%s",
             message.id, conversation.key, author.id, bool(pin))
    return message


def moderate(message, user, hidden=None, pinned=None):
    """Show again, pin or unpin, hide (in that order); what changes is live for everyone once
    committed. Asking for what already is changes nothing."""
    conversation = conversation_of(message)
    if hidden is False and message.hidden_at is not None:
        message.hidden_at = message.hidden_by = None
        emit("message", message_json(message, "shown"), conversation.topics)
    if pinned is True:
        if message.hidden_at is not None or hidden is True:
            raise MessageError(409, "hidden", "A hidden message cannot be pinned.")
        _check_pinnable(conversation, user)
        if message.pinned_at is None:
            _pin(conversation, message, user)
    elif pinned is False and message.pinned_at is not None:
        message.pinned_at = message.pinned_by = None
        emit("message", message_json(message, "unpinned"), conversation.topics)
    if hidden is True and message.hidden_at is None:
        message.hidden_at, message.hidden_by = utcnow(), user
        message.pinned_at = message.pinned_by = None
        _forget_words(message, conversation)
        emit("message", message_json(message, "hidden"), conversation.topics)
    db.session.commit()
    log.info("event=message_moderated message_id=%s user_id=%s hidden=%s pinned=%s",
             message.id, user.id, hidden, pinned)
    return message


def _check_pinnable(conversation, user):
    if not conversation.moderated_by(user):
        raise MessageError(403, "forbidden", "Only the course's staff can pin announcements.")
    if conversation.private:
        raise MessageError(400, "not_pinnable",
                           "Announcements are for a course's or an assignment's conversation, "
                           "not a private thread.")


def _pin(conversation, message, user):
    for earlier in db.session.scalars(select(Message).where(
            Message.conversation == conversation.key, Message.pinned_at.is_not(None),
            Message.id != message.id)):
        earlier.pinned_at = earlier.pinned_by = None
        emit("message", message_json(earlier, "unpinned"), conversation.topics)
    message.pinned_at, message.pinned_by = utcnow(), user
    emit("message", message_json(message, "pinned"), conversation.topics)
    students = db.session.scalars(select(Enrollment.user_id).where(
        Enrollment.course_id == conversation.course.id, Enrollment.role == "student")).all()
    text = message.body if len(message.body) <= ANNOUNCEMENT_SHOWN \
        else message.body[:ANNOUNCEMENT_SHOWN - 1].rstrip() + "…"
    send_flash([s for s in students if s != message.author_id],
               f"Announcement in {conversation.title}: {text}",
               link_url=conversation.page_url(), link_text="Open the conversation")


def _forget_words(message, conversation):
    """Take a hidden message's words out of the events that carried it, so no replay shows
    them again; the message row keeps them for admins."""
    carried = db.session.scalars(
        select(Event).join(EventTopic)
        .where(EventTopic.topic == conversation.topics[0], Event.type == "message",
               Event.created_at >= message.created_at,
               Event.payload["id"].as_integer() == message.id))
    for event in carried:
        event.payload = {**event.payload, "body": "", "html": "", "hidden": True}


# --- what is unread ---------------------------------------------------------------------------

def mark_read(user, conversation, upto_id):
    """Remember that the user has seen the conversation up to this message (never backwards).
    When that moves their mark, a "read" event on their own topic has their other open pages
    count again, so a badge another tab still shows goes."""
    insert = (postgresql.insert if db.session.get_bind().dialect.name == "postgresql"
              else sqlite.insert)
    statement = insert(MessageRead).values(user_id=user.id, conversation=conversation.key,
                                           last_read_id=upto_id)
    moved = db.session.execute(statement.on_conflict_do_update(
        index_elements=["user_id", "conversation"],
        set_={"last_read_id": statement.excluded.last_read_id},
        where=MessageRead.last_read_id < statement.excluded.last_read_id)).rowcount
    if moved:
        emit("read", {"conversation": conversation.key, "upto": upto_id}, [user_topic(user.id)])
    db.session.commit()


def newest_message_id():
    """Unread counts drawn now include every message up to this id; a page counting live
    events on from there skips the ones it is replayed (app/static/messages.js)."""
    return db.session.scalar(select(func.max(Message.id))) or 0


def private_threads_key(course_id):
    """Where a staff member's unread count over all of a course's private threads is kept."""
    return f"course.{course_id}.private"


def unread_counts(user, keys=(), private_course_ids=()):
    """{conversation: messages others wrote that this user has not seen}, for these
    conversations and, summed under private_threads_key, every private thread of these
    courses (for their staff)."""
    keys, private_course_ids = list(keys), list(private_course_ids)
    wanted = []
    if keys:
        wanted.append(Message.conversation.in_(keys))
    if private_course_ids:
        wanted.append(and_(Message.course_id.in_(private_course_ids),
                           Message.student_id.is_not(None)))
    if not wanted:
        return {}
    rows = db.session.execute(
        select(Message.conversation, Message.course_id, Message.student_id, func.count())
        .outerjoin(MessageRead, and_(MessageRead.conversation == Message.conversation,
                                     MessageRead.user_id == user.id))
        .where(or_(*wanted), Message.hidden_at.is_(None), Message.author_id != user.id,
               Message.id > func.coalesce(MessageRead.last_read_id, 0))
        .group_by(Message.conversation, Message.course_id, Message.student_id))
    counts = {}
    for key, course_id, student_id, count in rows:
        counts[key] = counts.get(key, 0) + count
        if student_id is not None and course_id in private_course_ids:
            total = private_threads_key(course_id)
            counts[total] = counts.get(total, 0) + count
    return counts


def private_threads(course, user):
    """The course's students, each with their private thread's newest message time and what
    this member of staff has not read there; those who have written first, newest first."""
    students = db.session.scalars(
        select(User).join(Enrollment).where(Enrollment.course_id == course.id,
                                            Enrollment.role == "student")
        .order_by(User.name, User.email)).all()
    latest = dict(db.session.execute(
        select(Message.student_id, func.max(Message.created_at))
        .where(Message.course_id == course.id, Message.student_id.is_not(None),
               Message.hidden_at.is_(None))
        .group_by(Message.student_id)).all())
    unread = unread_counts(user, [Conversation(course, student=s).key for s in students])
    threads = [(student, latest.get(student.id),
                unread.get(Conversation(course, student=student).key, 0))
               for student in students]
    return sorted(threads, key=lambda thread: (thread[1] is None,
                                               -thread[1].timestamp() if thread[1] else 0))
