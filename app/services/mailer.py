"""Emails: one outbox row per message, handed to SMTP at most once as far as we can know.

The row (unique dedupe key, Message-ID fixed when it is created) is locked while it goes to the
SMTP server. The moment the server accepts it, before QUIT, the acceptance is noted in Redis and
the row marked sent; a commit lost to a database restart is made again on a fresh connection
once the database answers. A retry, a re-run or a second worker on the same row finds it sent,
or finds the acceptance in Redis and marks the row sent without sending again. Two gaps are
left: the worker killed (-9) in the instant between the server's acceptance and the Redis note,
and a connection that drops after the server took the message but before its reply reached us.
The re-run then sends the message again with the same Message-ID, which lets mail clients
recognise the copy."""

import logging
import smtplib
import ssl
import time
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from app.deadlines import deadline_for
from app.extensions import db, get_redis
from app.links import external_url_for
from app.models import OutboxEmail, utcnow
from app.steps import Refused
from app.templating import file_size, local_time, utc_time

log = logging.getLogger(__name__)

# Every socket operation; several fit inside the email step's 60 s job timeout.
SMTP_TIMEOUT = 20
# How long a sent message waits for the database to come back (a restart takes seconds); well
# inside the email jobs' 60 s timeout. Past it the Redis note stands in until the re-run.
RECORD_SENT_WITHIN = 20
# Longer than any email job's retries, and than the reconciler's sweep of unsent rows.
ACCEPTED_TTL = 7 * 24 * 3600
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def receipt_body(submission, public_url):
    assignment = submission.assignment
    course = assignment.course
    link = external_url_for(public_url, "submissions.detail", submission_id=submission.id)
    late = "\nThis submission was received after the due time and is marked late.\n" \
        if submission.late else ""
    deadline = deadline_for(assignment, submission.student_id, at=submission.received_at)
    extended = (f"Due (your extension): {local_time(deadline.due_at, course.tz)}\n"
                if deadline.extended else "")
    return (
        f"Hello {submission.student.display_name},\n\n"
        f"We received your submission for {course.code}: {assignment.title}.\n\n"
        f"Receipt number: {submission.id}\n"
        f"Received: {utc_time(submission.received_at)}\n"
        f"Course time ({course.timezone}): {local_time(submission.received_at, course.tz)}\n"
        f"File: {submission.filename}\n"
        f"Size: {file_size(submission.size)} ({submission.size} bytes)\n"
        f"SHA-256: {submission.sha256}\n"
        f"{extended}"
        f"{late}\n"
        f"Follow its checks and, later, your grade at:\n{link}\n\n"
        "Keep this email as proof of your submission.\n"
    )


def outbox_row(key, to, subject, body, domain="submissions.local"):
    """The one outbox row for `key`, created (and committed) on first call."""
    row = db.session.execute(db.select(OutboxEmail).filter_by(dedupe_key=key)).scalar_one_or_none()
    if row is not None:
        return row
    # Unique across deployments, yet stable: every resend of this row carries the same id.
    message_id = make_msgid(idstring=key.replace(":", "-"), domain=domain)
    row = OutboxEmail(dedupe_key=key, to=to, subject=subject, body=body, message_id=message_id)
    db.session.add(row)
    try:
        db.session.commit()
        return row
    except IntegrityError:  # another run of the same step created it first
        db.session.rollback()
    return db.session.execute(db.select(OutboxEmail).filter_by(dedupe_key=key)).scalar_one()


def message_for(row, sender):
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.to
    message["Subject"] = row.subject
    message["Message-ID"] = row.message_id
    message["Date"] = row.created_at
    message.set_content(row.body)
    return message


@contextmanager
def smtp_session(smtp_url, timeout=SMTP_TIMEOUT):
    parts = urlsplit(smtp_url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"SMTP_URL scheme must be one of {', '.join(DEFAULT_PORTS)}")
    client_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    client = client_class(parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[parts.scheme],
                          timeout=timeout)
    try:
        if parts.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def accepted_key(row_id):
    return f"outbox:accepted:{row_id}"


def note_accepted(row_id, message_id):
    """Remember in Redis that the server took this row's message, should the database not hear."""
    try:
        get_redis().set(accepted_key(row_id), message_id, ex=ACCEPTED_TTL)
    except RedisError as exc:
        # The database record that follows still holds it; only a double fault is uncovered.
        log.warning("event=outbox_note_failed outbox_id=%s error=%r", row_id, exc)


def accepted_earlier(row_id, message_id):
    """True if an earlier run saw the server accept this very message (not another database's
    row with the same id). A Redis that cannot say raises: the step tries again later."""
    noted = get_redis().get(accepted_key(row_id))
    return noted is not None and noted.decode() == message_id


def record_sent(row_id, transport):
    """Mark the row sent. A database that went away (a restart) is waited for, up to
    RECORD_SENT_WITHIN seconds, each attempt on a fresh connection."""
    deadline = time.monotonic() + RECORD_SENT_WITHIN
    pause = 0.1
    while True:
        try:
            db.session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id == row_id, OutboxEmail.sent_at.is_(None))
                .values(sent_at=utcnow(), transport=transport)
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
            return
        except (OperationalError, InterfaceError) as exc:
            db.session.rollback()
            if time.monotonic() + pause > deadline:
                raise
            log.warning("event=outbox_record_retry outbox_id=%s error=%r", row_id, exc)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def deliver(row, config):
    """Send an outbox row unless it was sent already; returns a sentence for the step detail."""
    # Held until the row is marked sent: a second worker on the same row waits here, then finds
    # it sent. PostgreSQL only; SQLite has no row locks and ignores FOR UPDATE.
    row = db.session.execute(
        db.select(OutboxEmail).filter_by(id=row.id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    row_id, to, message_id = row.id, row.to, row.message_id
    if row.sent_at is not None:
        db.session.commit()
        return f"Already sent to {to}; not sent again"
    if not config["SMTP_URL"]:
        record_sent(row_id, "outbox")
        return f"Saved to the outbox for {to} (no mail server configured)"
    if accepted_earlier(row_id, message_id):
        # The server took it on an earlier run whose record never reached the database.
        record_sent(row_id, "smtp")
        return f"Already sent to {to}; not sent again"
    message = message_for(row, config["MAIL_FROM"])
    try:
        with smtp_session(config["SMTP_URL"]) as client:
            client.send_message(message)
            # Recorded before QUIT: a server slow to say goodbye must not widen the duplicate
            # window.
            note_accepted(row_id, message_id)
            record_sent(row_id, "smtp")
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as exc:
        reply = permanent_reply(exc)
        if reply is None:
            raise
        raise Refused(f"The mail server refused the email to {to}: {reply}",
                      "The mail server refused the email") from exc
    return f"Sent to {to}"


def permanent_reply(exc):
    """The server's reply when it refused for good (5xx, RFC 5321 section 4.2.1), else None:
    a 4xx reply, such as a server shutting down or greylisting, is worth another try."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
    else:
        replies = [(exc.smtp_code, exc.smtp_error)]
    if not replies or not all(500 <= code < 600 for code, _ in replies):
        return None
    code, text = replies[0]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def deliver_receipt(submission, config):
    assignment = submission.assignment
    row = outbox_row(
        f"receipt:{submission.id}",
        submission.student.email,
        f"Receipt: {assignment.course.code} {assignment.title} (#{submission.id})",
        receipt_body(submission, config["PUBLIC_URL"]),
        urlsplit(config["PUBLIC_URL"]).hostname or "submissions.local",
    )
    return deliver(row, config)
