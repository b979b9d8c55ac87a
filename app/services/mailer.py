"""Receipt emails. Every message is first an outbox row with a unique key, so a retried or
re-run step finds the row and does not send a second message."""

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import OutboxEmail, utcnow
from app.templating import file_size, local_time, utc_time


def receipt_body(submission, public_url):
    assignment = submission.assignment
    link = f"{public_url.rstrip('/')}/submissions/{submission.id}"
    late = "\nThis submission was received after the due time and is marked late.\n" \
        if submission.late else ""
    return (
        f"Hello {submission.student.display_name},\n\n"
        f"We received your submission for {assignment.course.code}: {assignment.title}.\n\n"
        f"Receipt number: {submission.id}\n"
        f"Received: {utc_time(submission.received_at)} "
        f"({local_time(submission.received_at, assignment.course.tz)})\n"
        f"File: {submission.filename}\n"
        f"Size: {file_size(submission.size)} ({submission.size} bytes)\n"
        f"SHA-256: {submission.sha256}\n"
        f"{late}\n"
        f"Follow its checks and, later, your grade at:\n{link}\n\n"
        "Keep this email as proof of your submission.\n"
    )


def outbox_row(key, to, subject, body):
    """The one outbox row for `key`, created on first call."""
    row = db.session.execute(db.select(OutboxEmail).filter_by(dedupe_key=key)).scalar_one_or_none()
    if row is not None:
        return row
    row = OutboxEmail(dedupe_key=key, to=to, subject=subject, body=body,
                      message_id=f"<{key.replace(':', '-')}@submissions.local>")
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        row = db.session.execute(db.select(OutboxEmail).filter_by(dedupe_key=key)).scalar_one()
    return row


def smtp_send(smtp_url, sender, row, timeout=20):
    parts = urlsplit(smtp_url)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.to
    message["Subject"] = row.subject
    message["Message-ID"] = row.message_id
    message.set_content(row.body)
    secure = parts.scheme == "smtps"
    port = parts.port or (465 if secure else 25)
    client_class = smtplib.SMTP_SSL if secure else smtplib.SMTP
    with client_class(parts.hostname or "127.0.0.1", port, timeout=timeout) as client:
        if parts.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


def deliver(row, config):
    """Send an outbox row once; returns a sentence for the step detail."""
    if row.sent_at is not None:
        return f"Already sent to {row.to}"
    if config["SMTP_URL"]:
        smtp_send(config["SMTP_URL"], config["MAIL_FROM"], row)
        row.transport = "smtp"
        detail = f"Sent to {row.to}"
    else:
        row.transport = "outbox"
        detail = f"Saved to the outbox for {row.to} (no mail server configured)"
    row.sent_at = utcnow()
    db.session.commit()
    return detail


def deliver_receipt(submission, config):
    assignment = submission.assignment
    row = outbox_row(
        f"receipt:{submission.id}",
        submission.student.email,
        f"Receipt: {assignment.course.code} {assignment.title} (#{submission.id})",
        receipt_body(submission, config["PUBLIC_URL"]),
    )
    return deliver(row, config)
