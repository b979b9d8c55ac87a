"""Messages from the central student-records system: courses created, enrolments added and
removed, per-student extensions granted and withdrawn, students renamed or given a new email.

A message is signed as the outbound sync signs its records (app/services/admin_sync.py: the
raw body's HMAC-SHA256 with ADMIN_SYNC_SECRET, in `X-Signature`) and says when it was sent, so
a captured one cannot be replayed more than MAX_AGE later. It is recorded as it arrives and
applied by a job on the `records` queue. A message id seen before changes nothing, and a change
older than one already applied to the same thing (by `occurred_at`, then `sequence`) is
superseded instead of undoing the newer one. A message about a course or account that an
earlier message (arriving later) creates waits for it, up to WAIT_FOR_SUBJECT."""

import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import RedisError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from app import pipeline
from app.deadlines import ExtensionError, extension_in_force, grant_extension, withdraw_extension
from app.events.publisher import emit
from app.events.topics import ADMIN_DASHBOARD, user_topic
from app.extensions import db
from app.flash import send_flash
from app.links import path_for
from app.models import Assignment, Course, Enrollment, InboundMessage, User, utcnow
from app.services.admin_sync import signature
from app.steps import JOBS
from app.templating import local_time

log = logging.getLogger(__name__)

MAX_AGE = timedelta(minutes=5)
MAX_BODY = 64 * 1024
WAIT_FOR_SUBJECT = timedelta(minutes=10)


class MessageError(ValueError):
    """The message is malformed; the text says what is wrong, for the sender."""


class StaleMessage(ValueError):
    """Sent more than MAX_AGE before (or after) our clock: possibly a replay."""


class Rejected(Exception):
    """The message cannot be applied; the text says why."""


class Superseded(Exception):
    """A newer decision on the same thing stands; the text says which."""


class NotYet(Exception):
    """What the message is about does not exist yet: an earlier message may still arrive."""


def signed(secret, body, header):
    return bool(header) and hmac.compare_digest(header.encode(), signature(secret, body).encode())


def _text(limit, empty=False):
    def read(value):
        if not isinstance(value, str) or len(value.strip()) > limit or not (
                empty or value.strip()):
            raise ValueError(f"text of {0 if empty else 1} to {limit} characters")
        return value.strip()
    return read


def _email(value):
    value = _text(254)(value).lower()
    if "@" not in value:
        raise ValueError("an email address")
    return value


def _whole(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("a whole number of at least 0")
    return value


def _row_id(value):
    if _whole(value) == 0 or value >= 10**18:
        raise ValueError("a positive id")
    return value


def _time(value):
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise ValueError("an ISO-8601 time with its UTC offset")


def _zone(value):
    try:
        ZoneInfo(_text(64)(value))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("a time zone name such as Europe/London") from None
    return value.strip()


def _role(value):
    if value not in ("student", "staff"):
        raise ValueError('"student" or "staff"')
    return value


# kind: (required fields of `data`, optional ones), each with how to read it.
KINDS = {
    "course.created": ({"code": _text(32), "title": _text(200)}, {"timezone": _zone}),
    "enrolment.added": ({"email": _email, "course": _text(32)},
                        {"role": _role, "name": _text(120)}),
    "enrolment.removed": ({"email": _email, "course": _text(32)}, {}),
    "extension.granted": ({"email": _email, "assignment_id": _row_id, "due_at": _time},
                          {"cutoff_at": _time, "reason": _text(500, empty=True)}),
    "extension.withdrawn": ({"email": _email, "assignment_id": _row_id}, {}),
    "student.renamed": ({"email": _email, "name": _text(120)}, {}),
    "student.email_changed": ({"email": _email, "new_email": _email}, {}),
}


def _field(holder, name, read, prefix=""):
    if holder.get(name) is None:
        raise MessageError(f"{prefix}{name} is required.")
    try:
        return read(holder[name])
    except ValueError as exc:
        raise MessageError(f"{prefix}{name} must be {exc}.") from None


def read_data(kind, data):
    required, optional = KINDS[kind]
    fields = {name: _field(data, name, read, "data.") for name, read in required.items()}
    fields.update({name: _field(data, name, read, "data.") for name, read in optional.items()
                   if data.get(name) is not None})
    return fields


def subject_of(kind, data):
    """The one thing a message changes: changes to it are applied in the order they were made."""
    thing = kind.split(".")[0]
    if thing == "course":
        return f"course:{data['code']}"
    if thing == "enrolment":
        return f"enrolment:{data['email']}:{data['course']}"
    if thing == "extension":
        return f"extension:{data['email']}:{data['assignment_id']}"
    return f"{kind}:{data['email']}"


@dataclass(frozen=True)
class Message:
    message_id: str
    kind: str
    subject: str
    sequence: int
    occurred_at: datetime
    sent_at: datetime
    payload: dict


def _not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def read_message(body, now):
    """The message in a (signed) body, or MessageError saying what is wrong with it."""
    try:
        message = json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise MessageError("The body is not JSON.") from None
    if not isinstance(message, dict):
        raise MessageError("Send one JSON object.")
    sent_at = _field(message, "sent_at", _time)
    if abs(now - sent_at) > MAX_AGE:
        raise StaleMessage(
            f"The message says it was sent at {sent_at.isoformat()}, more than "
            f"{MAX_AGE.seconds // 60} minutes from our clock ({now.isoformat()}); "
            "send it again, newly signed.")
    message_id = _field(message, "message_id", _text(100))
    kind = message.get("kind")
    if kind not in KINDS:
        raise MessageError(f"kind must be one of {', '.join(KINDS)}.")
    occurred_at = _field(message, "occurred_at", _time)
    sequence = _field(message, "sequence", _whole)
    if not isinstance(message.get("data"), dict):
        raise MessageError("data must be an object.")
    data = read_data(kind, message["data"])
    return Message(message_id, kind, subject_of(kind, data), sequence, occurred_at, sent_at,
                   message)


def record(message):
    """(row, created): the message recorded, or the row recorded under its id before."""
    def recorded():
        return db.session.execute(
            select(InboundMessage).filter_by(message_id=message.message_id)
        ).scalar_one_or_none()

    existing = recorded()
    if existing is not None:
        return existing, False
    row = InboundMessage(
        message_id=message.message_id, kind=message.kind, subject=message.subject,
        sequence=message.sequence, occurred_at=message.occurred_at, sent_at=message.sent_at,
        payload=message.payload, state="received", detail="",
    )
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:  # the same message, sent twice at once
        db.session.rollback()
        return recorded(), False
    return row, True


def apply_job_id(inbound_id):
    return f"inbound-{inbound_id}"


def enqueue_apply(inbound_id):
    """Queue the message's job unless one is already waiting or running."""
    return pipeline.enqueue_once(JOBS["inbound"], apply_job_id(inbound_id), inbound_id,
                                 description=f"apply student-records message {inbound_id}")


def apply_message(inbound_id):
    """Apply one recorded message if it is still to be applied; returns its state after."""
    subject = db.session.scalar(
        select(InboundMessage.subject).where(InboundMessage.id == inbound_id))
    db.session.rollback()
    if subject is None:
        return "missing"
    # The first statement of the transaction, so messages on one subject are applied one at a
    # time: it takes their rows' locks on PostgreSQL and the database's write lock on SQLite.
    db.session.execute(update(InboundMessage).where(InboundMessage.subject == subject)
                       .values(subject=subject).execution_options(synchronize_session=False))
    row = db.session.get(InboundMessage, inbound_id)
    db.session.refresh(row)
    if row.state != "received":
        state = row.state
        db.session.rollback()
        return state
    try:
        newer = _newer_applied(row)
        if newer is not None:
            raise Superseded(f"Message {newer} made a later change to the same thing.")
        detail = APPLY[row.kind](row, read_data(row.kind, row.payload["data"]))
    except Superseded as exc:
        return _finish(row, "superseded", str(exc))
    except Rejected as exc:
        return _finish(row, "rejected", str(exc))
    except NotYet as exc:
        waited = utcnow() - row.waiting_since
        if waited > WAIT_FOR_SUBJECT:
            minutes = int(waited.total_seconds() // 60)
            return _finish(row, "rejected", f"{exc} (waited {minutes} minutes for a message "
                                            "that would create it)")
        row.detail = f"Waiting: {exc}"
        db.session.commit()
        return row.state
    return _finish(row, "applied", detail)


def give_up(inbound_id, reason):
    """The job ran out of retries: the message is rejected, with the error, for an admin."""
    db.session.execute(
        update(InboundMessage)
        .where(InboundMessage.id == inbound_id, InboundMessage.state == "received")
        .values(state="rejected", detail=reason[:2000], finished_at=utcnow())
    )
    db.session.commit()


def apply_again(inbound_ids):
    """Put rejected messages back to be applied, once an admin has put right what stopped them
    (a course created, an email address freed). Returns (how many were put back, how many of
    those Redis did not take: the reconciler queues those once it answers). Messages in any
    other state are left as they are."""
    again = db.session.scalars(
        update(InboundMessage)
        .where(InboundMessage.id.in_(inbound_ids), InboundMessage.state == "rejected")
        .values(state="received", detail="To be applied again, at an admin's request.",
                finished_at=None, reapplied_at=utcnow())
        .returning(InboundMessage.id)
    ).all()
    db.session.commit()
    for queued, inbound_id in enumerate(again):
        try:
            enqueue_apply(inbound_id)
        except RedisError as exc:
            # The rest would wait as long again each: the reconciler queues them all.
            log.warning("event=inbound_apply_again_unqueued inbound_id=%s count=%s error=%r",
                        inbound_id, len(again) - queued, exc)
            return len(again), len(again) - queued
    return len(again), 0


def _finish(row, state, detail):
    row.state = state
    row.detail = detail
    row.finished_at = utcnow()
    db.session.commit()
    return state


def _newer_applied(row):
    return db.session.scalar(
        select(InboundMessage.message_id).where(
            InboundMessage.subject == row.subject, InboundMessage.state == "applied",
            InboundMessage.id != row.id,
            or_(InboundMessage.occurred_at > row.occurred_at,
                and_(InboundMessage.occurred_at == row.occurred_at,
                     InboundMessage.sequence > row.sequence)),
        ).limit(1))


def _course(code):
    return db.session.execute(select(Course).filter_by(code=code)).scalar_one_or_none()


def _account(email):
    return db.session.execute(
        select(User).where(func.lower(User.email) == email)).scalar_one_or_none()


def _existing_course(code):
    course = _course(code)
    if course is None:
        raise NotYet(f"There is no course {code}.")
    return course


def _existing_account(email):
    user = _account(email)
    if user is None:
        raise NotYet(f"There is no account {email}.")
    return user


def _enrolment(user, course):
    return db.session.execute(
        select(Enrollment).filter_by(user_id=user.id, course_id=course.id)
    ).scalar_one_or_none()


def _announce_enrolment(user, course, role):
    """On the user's own topic: their open streams stop at once on the course's topics they
    may no longer follow (app/events/hub.py)."""
    emit("enrolment", {"user_id": user.id, "course_id": course.id, "course": course.code,
                       "role": role}, [user_topic(user.id)])


def _create_course(row, data):
    if _course(data["code"]) is not None:
        return f"Course {data['code']} already exists; nothing changed."
    course = Course(code=data["code"], title=data["title"],
                    timezone=data.get("timezone", "UTC"))
    db.session.add(course)
    db.session.flush()
    emit("course", {"course_id": course.id, "code": course.code, "title": course.title},
         [ADMIN_DASHBOARD])
    return f"Created course {course.code}: {course.title} ({course.timezone})."


def _enrol(row, data):
    course = _existing_course(data["course"])
    role = data.get("role", "student")
    user = _account(data["email"])
    created = user is None
    if created:
        # Nobody knows this password: an admin sets one on the account's admin page.
        user = User(email=data["email"], name=data.get("name", ""), role=role)
        user.set_password(secrets.token_urlsafe(32))
        db.session.add(user)
    enrolment = None if created else _enrolment(user, course)
    if enrolment is not None and enrolment.role == role:
        return f"{user.email} was already enrolled in {course.code} as {role}; nothing changed."
    if enrolment is None:
        db.session.add(Enrollment(user=user, course=course, role=role))
    else:
        enrolment.role = role
    db.session.flush()
    _announce_enrolment(user, course, role)
    send_flash([user.id], f"You are now enrolled in {course.code}: {course.title}"
               f"{' as staff' if role == 'staff' else ''}.", level="info",
               link_url=path_for("submissions.index"), link_text="See your assignments")
    return (f"Enrolled {user.email} in {course.code} as {role}"
            f"{' (new account: an admin sets its password)' if created else ''}.")


def _unenrol(row, data):
    course, user = _course(data["course"]), _account(data["email"])
    enrolment = _enrolment(user, course) if course and user else None
    if enrolment is None:
        return f"{data['email']} was not enrolled in {data['course']}; nothing changed."
    db.session.delete(enrolment)
    db.session.flush()
    db.session.expire(user, ["enrollments"])
    _announce_enrolment(user, course, None)
    send_flash([user.id], f"You are no longer enrolled in {course.code}: {course.title}.",
               level="warning")
    return f"Removed {user.email} from {course.code}."


def _assignment(assignment_id):
    assignment = db.session.get(Assignment, assignment_id)
    if assignment is None:
        raise Rejected(f"There is no assignment {assignment_id}.")
    return assignment


def _grant(row, data):
    assignment = _assignment(data["assignment_id"])
    student = _existing_account(data["email"])
    if student.course_role(assignment.course_id) != "student":
        raise NotYet(f"{student.email} is not a student of {assignment.course.code}.")
    try:
        extension, changed = grant_extension(
            assignment, student, data["due_at"], data.get("cutoff_at"),
            reason=data.get("reason", ""), source="records", source_ref=row.message_id,
            decided_at=row.occurred_at)
    except ExtensionError as exc:
        raise Rejected(str(exc)) from None
    if not changed:
        raise Superseded("A later decision on this student's deadline stands.")
    tz = assignment.course.tz
    closes = (f", closing {local_time(extension.cutoff_at, tz)}"
              if extension.cutoff_at else "")
    return (f"Extension for {student.email} on {assignment}: due "
            f"{local_time(extension.due_at, tz)}{closes}.")


def _withdraw(row, data):
    assignment = _assignment(data["assignment_id"])
    student = _account(data["email"])
    if student is None or extension_in_force(assignment.id, student.id) is None:
        return f"{data['email']} had no extension on {assignment}; nothing changed."
    if withdraw_extension(assignment, student, decided_at=row.occurred_at) is None:
        raise Superseded("A later decision on this student's deadline stands.")
    return f"Withdrew the extension of {student.email} on {assignment}."


def _announce_profile(user):
    emit("profile", {"user_id": user.id, "name": user.name, "email": user.email},
         [user_topic(user.id)])


def _rename(row, data):
    user = _existing_account(data["email"])
    if user.name == data["name"]:
        return f"{user.email} is already named {user.name}; nothing changed."
    before = user.display_name
    user.name = data["name"]
    _announce_profile(user)
    return f"Renamed {user.email} from {before} to {user.name}."


def _change_email(row, data):
    user = _existing_account(data["email"])
    new_email = data["new_email"]
    if new_email == user.email.lower():
        return f"{user.email} already has that email; nothing changed."
    taken = _account(new_email)
    if taken is not None:
        raise Rejected(f"{new_email} is already the email of another account.")
    before = user.email
    user.email = new_email
    _announce_profile(user)
    send_flash([user.id], f"Your email address is now {new_email}: log in with it from now on.",
               level="info")
    return f"Changed the email of {before} to {new_email}."


APPLY = {
    "course.created": _create_course,
    "enrolment.added": _enrol,
    "enrolment.removed": _unenrol,
    "extension.granted": _grant,
    "extension.withdrawn": _withdraw,
    "student.renamed": _rename,
    "student.email_changed": _change_email,
}
