import hashlib
import secrets
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db

# Two spellings of one file type: allowing either allows both.
SAME_TYPE = {"jpg": "jpeg", "jpeg": "jpg"}


def utcnow():
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC on every backend, always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


ROLES = ("student", "staff", "admin")


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="student")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    enrollments: Mapped[list["Enrollment"]] = relationship(back_populates="user")

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self):
        return self.active

    @property
    def is_admin(self):
        return self.role == "admin"

    @property
    def display_name(self):
        return self.name or self.email

    def course_role(self, course_id):
        for enrollment in self.enrollments:
            if enrollment.course_id == course_id:
                return enrollment.role
        return None

    def is_staff_of(self, course_id):
        return self.is_admin or self.course_role(course_id) == "staff"

    def __repr__(self):
        return f"<User {self.email}>"


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @staticmethod
    def hash(token):
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, user):
        token = secrets.token_urlsafe(32)
        db.session.add(cls(user=user, token_hash=cls.hash(token)))
        return token


class Course(db.Model):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")

    enrollments: Mapped[list["Enrollment"]] = relationship(back_populates="course")
    assignments: Mapped[list["Assignment"]] = relationship(back_populates="course")

    @property
    def tz(self):
        return ZoneInfo(self.timezone)

    def __str__(self):
        return self.code


class Enrollment(db.Model):
    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("user_id", "course_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    course_id: Mapped[int] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="student")

    user: Mapped[User] = relationship(back_populates="enrollments")
    course: Mapped[Course] = relationship(back_populates="enrollments")


class Assignment(db.Model):
    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cutoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Comma-separated file extensions, e.g. "pdf,docx,txt,py,zip,png".
    allowed_types: Mapped[str] = mapped_column(String(200), default="pdf")
    max_size_mb: Mapped[int] = mapped_column(default=20)
    max_score: Mapped[int] = mapped_column(default=100)
    release_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_job_id: Mapped[str | None] = mapped_column(String(64))

    course: Mapped[Course] = relationship(back_populates="assignments")
    submissions: Mapped[list["Submission"]] = relationship(back_populates="assignment")

    @property
    def allowed_extensions(self):
        """The listed extensions, each with its other spelling (a camera's .jpeg is a .jpg)."""
        listed = [t.strip().lower().lstrip(".") for t in self.allowed_types.split(",") if t.strip()]
        spelled = [other for ext in listed for other in (ext, SAME_TYPE.get(ext)) if other]
        return list(dict.fromkeys(spelled))

    def is_open(self, at=None):
        at = at or utcnow()
        return self.cutoff_at is None or at <= self.cutoff_at

    def __str__(self):
        return f"{self.course.code}: {self.title}" if self.course else self.title


EXTENSION_SOURCES = ("staff", "records")


class Extension(db.Model):
    """One student's own due time and cut-off on one assignment. Rows are never deleted: a
    withdrawn or replaced grant keeps who ended it and when, so the table is the audit trail.
    At most one grant per student and assignment is in force (ended_at is null)."""

    __tablename__ = "extensions"
    __table_args__ = (
        Index("uq_extensions_in_force", "assignment_id", "student_id", unique=True,
              sqlite_where=text("ended_at IS NULL"),
              postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE"), index=True
    )
    student_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                            index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cutoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    # "staff" (granted on the marking page) or "records" (the student-records system).
    source: Mapped[str] = mapped_column(String(16), default="staff")
    # The records system's message id, so applying the same message twice grants once.
    source_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    # When the grant was decided where it was made; a message decided earlier than the grant
    # in force is stale and changes nothing, whatever order messages arrive in.
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # "withdrawn", or "replaced" by a later grant; decided, like the grant, where it was made.
    end_reason: Mapped[str | None] = mapped_column(String(16))
    end_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    assignment: Mapped[Assignment] = relationship()
    student: Mapped[User] = relationship(foreign_keys=[student_id])
    granted_by: Mapped[User | None] = relationship(foreign_keys=[granted_by_id])
    ended_by: Mapped[User | None] = relationship(foreign_keys=[ended_by_id])


SUBMISSION_STATUSES = ("received", "processing", "completed", "rejected", "needs_attention")


# A step in either of these needs nothing more.
DONE_STATUSES = ("succeeded", "skipped")


class Submission(db.Model):
    __tablename__ = "submissions"
    __table_args__ = (
        # A key names one upload to one assignment; another assignment may reuse it.
        UniqueConstraint("student_id", "assignment_id", "idempotency_key",
                         name="uq_submissions_student_assignment_key"),
        Index("ix_submissions_assignment_student", "assignment_id", "student_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    student_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    incoming_path: Mapped[str | None] = mapped_column(String(500))
    stored_path: Mapped[str | None] = mapped_column(String(500))
    thumbnail_path: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    late: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="received", index=True)
    status_detail: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    similarity: Mapped[int | None]
    similarity_report: Mapped[dict | None] = mapped_column(db.JSON)

    assignment: Mapped[Assignment] = relationship(back_populates="submissions")
    student: Mapped[User] = relationship()
    steps: Mapped[list["StepRun"]] = relationship(
        back_populates="submission", order_by="StepRun.position"
    )
    grade: Mapped["Grade | None"] = relationship(back_populates="submission", uselist=False)

    def step(self, name):
        return next((s for s in self.steps if s.name == name), None)

    def visible_to(self, user):
        if user is None or not user.is_authenticated:
            return False
        return user.id == self.student_id or user.is_staff_of(self.assignment.course_id)

    @property
    def released_grade(self):
        if self.assignment.released_at is None:  # before a release, no need to look
            return None
        return self.grade


class StepRun(db.Model):
    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("submission_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
    last_error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    submission: Mapped[Submission] = relationship(back_populates="steps")

    @property
    def done(self):
        return self.status in DONE_STATUSES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Event(db.Model):
    """Append-only audit trail; the id is the SSE event id."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict] = mapped_column(db.JSON)
    submission_id: Mapped[int | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    topics: Mapped[list["EventTopic"]] = relationship(
        back_populates="event", cascade="all, delete-orphan"
    )

    @property
    def topic_names(self):
        return [t.topic for t in self.topics]


class EventTopic(db.Model):
    __tablename__ = "event_topics"
    __table_args__ = (Index("ix_event_topics_topic_event", "topic", "event_id"),)

    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)

    event: Mapped[Event] = relationship(back_populates="topics")


class Grade(db.Model):
    __tablename__ = "grades"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    score: Mapped[float]
    feedback: Mapped[str] = mapped_column(Text, default="")
    marker_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # When the student was last told about this grade (release or later change).
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    submission: Mapped[Submission] = relationship(back_populates="grade")
    marker: Mapped[User | None] = relationship()


class FlashMessage(db.Model):
    __tablename__ = "flash_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(16), default="info")
    link_url: Mapped[str | None] = mapped_column(String(500))
    link_text: Mapped[str | None] = mapped_column(String(100))
    button_text: Mapped[str | None] = mapped_column(String(100))
    modal: Mapped[bool] = mapped_column(default=False)
    hide_after: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    def to_dict(self):
        return {
            "id": self.id,
            "text": self.text,
            "level": self.level,
            "link_url": self.link_url,
            "link_text": self.link_text,
            "button_text": self.button_text,
            "modal": self.modal,
            "hide_after": self.hide_after,
            "created_at": self.created_at.isoformat(),
        }


class OutboxEmail(db.Model):
    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One row per message we mean to send, e.g. "receipt:42"; the unique key makes it exactly one.
    dedupe_key: Mapped[str] = mapped_column(String(100), unique=True)
    to: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    transport: Mapped[str] = mapped_column(String(20), default="outbox")


class ExternalRecord(db.Model):
    """What an outside system acknowledged for a submission, so a re-run never sends twice."""

    __tablename__ = "external_records"
    __table_args__ = (UniqueConstraint("submission_id", "service"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(32))
    remote_id: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(32), default="")
    data: Mapped[dict | None] = mapped_column(db.JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


INBOUND_KINDS = ("course.created", "enrolment.added", "enrolment.removed", "extension.granted",
                 "extension.withdrawn", "student.renamed", "student.email_changed")
# received: waiting to be applied; applied: done (whatever it changed, said in `detail`);
# superseded: a newer change to the same thing was applied first, so this one changed nothing;
# rejected: it cannot be applied, and `detail` says why.
INBOUND_STATES = ("received", "applied", "superseded", "rejected")


class InboundMessage(db.Model):
    """One message from the student-records system, recorded as it arrives and applied by a
    job. Its sender's message id makes a resend a no-op; `subject` names the thing it changes,
    and (`occurred_at`, `sequence`) orders the changes to one subject whatever order they
    arrive in."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    subject: Mapped[str] = mapped_column(String(400), index=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict] = mapped_column(db.JSON)
    state: Mapped[str] = mapped_column(String(16), default="received", index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When an admin last had it applied again after a rejection: a wait for what it needs
    # starts afresh from then.
    reapplied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def job_id(self):
        return f"inbound-{self.id}"

    @property
    def waiting_since(self):
        return self.reapplied_at or self.received_at


class Message(db.Model):
    """One message in a conversation: a course's, an assignment's, or one student's private
    thread with the course's staff (student_id set). `conversation` names which, as
    app.messages.conversations spells it, so a page of history is one index range."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_id", "conversation", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"),
                                           index=True)
    assignment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE"))
    # The student of a private thread; null in a course's or an assignment's conversation.
    student_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                           index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    pinned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pinned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    hidden_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hidden_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    course: Mapped[Course] = relationship()
    assignment: Mapped[Assignment | None] = relationship()
    student: Mapped[User | None] = relationship(foreign_keys=[student_id])
    author: Mapped[User] = relationship(foreign_keys=[author_id])
    pinned_by: Mapped[User | None] = relationship(foreign_keys=[pinned_by_id])
    hidden_by: Mapped[User | None] = relationship(foreign_keys=[hidden_by_id])


class MessageRead(db.Model):
    """How far one user has read one conversation: the newest message id they have seen."""

    __tablename__ = "message_reads"
    __table_args__ = (UniqueConstraint("user_id", "conversation"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    conversation: Mapped[str] = mapped_column(String(64))
    last_read_id: Mapped[int] = mapped_column(default=0)
