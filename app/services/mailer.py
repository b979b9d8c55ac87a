"""Receipt emails: one outbox row per message, handed to SMTP at most once as far as we can know.

The row (unique dedupe key, Message-ID fixed when it is created) is locked while it goes to the
SMTP server and marked sent the moment the server accepts it, before QUIT, so a retry, a re-run
or a second worker on the same step finds it sent. One window is left: the server accepted the
message and we died (or lost the database) before that commit; the re-run sends it again with
the same Message-ID, which lets mail clients recognise the copy."""

import smtplib
import ssl
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import OutboxEmail, utcnow
from app.templating import file_size, local_time, utc_time

# Every socket operation; several fit inside the email step's 60 s job timeout.
SMTP_TIMEOUT = 20
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def receipt_body(submission, public_url):
    assignment = submission.assignment
    course = assignment.course
    link = f"{public_url.rstrip('/')}/submissions/{submission.id}"
    late = "\nThis submission was received after the due time and is marked late.\n" \
        if submission.late else ""
    return (
        f"Hello {submission.student.display_name},\n\n"
        f"We received your submission for {course.code}: {assignment.title}.\n\n"
        f"Receipt number: {submission.id}\n"
        f"Received: {utc_time(submission.received_at)}\n"
        f"Course time ({course.timezone}): {local_time(submission.received_at, course.tz)}\n"
        f"File: {submission.filename}\n"
        f"Size: {file_size(submission.size)} ({submission.size} bytes)\n"
        f"SHA-256: {submission.sha256}\n"
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
    db.session.add(OutboxEmail(dedupe_key=key, to=to, subject=subject, body=body,
                               message_id=message_id))
    try:
        db.session.commit()
    except IntegrityError:
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


def mark_sent(row, transport):
    row.transport = transport
    row.sent_at = utcnow()
    db.session.commit()


def deliver(row, config):
    """Send an outbox row unless it was sent already; returns a sentence for the step detail."""
    # Held until mark_sent commits: a second worker on the same row waits here, then finds it
    # sent. PostgreSQL only; SQLite has no row locks and ignores FOR UPDATE.
    row = db.session.execute(
        db.select(OutboxEmail).filter_by(id=row.id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if row.sent_at is not None:
        db.session.commit()
        return f"Already sent to {row.to}; not sent again"
    if not config["SMTP_URL"]:
        mark_sent(row, "outbox")
        return f"Saved to the outbox for {row.to} (no mail server configured)"
    with smtp_session(config["SMTP_URL"]) as client:
        client.send_message(message_for(row, config["MAIL_FROM"]))
        # Recorded before QUIT: a server slow to say goodbye must not widen the duplicate window.
        mark_sent(row, "smtp")
    return f"Sent to {row.to}"


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
