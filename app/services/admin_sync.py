"""The central student-records system: one signed JSON POST per submission.

The raw body is signed with HMAC-SHA256 (`X-Signature: sha256=<hex>`) and sent with an
Idempotency-Key, so the records system keeps one record however often a retry sends it."""

import hashlib
import hmac
import json

import requests

from app.extensions import db
from app.models import ExternalRecord
from app.services.circuit import refusal, refused_for_good, retry_after_seconds
from app.steps import Refused, RetryLater

SERVICE = "admin_sync"


class RecordsError(Exception):
    """The records system did not take the record; the step is retried with backoff."""


def signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def idempotency_key(submission):
    # The checksum keeps keys apart when a rebuilt database hands out the same ids again.
    return f"submission-{submission.id}-{submission.sha256[:16]}"


def submission_record(submission):
    assignment = submission.assignment
    return {
        "submission_id": submission.id,
        "student_email": submission.student.email,
        "course": assignment.course.code,
        "assignment_id": assignment.id,
        "assignment": assignment.title,
        "filename": submission.filename,
        "size": submission.size,
        "sha256": submission.sha256,
        "received_at": submission.received_at.isoformat(),
        "late": submission.late,
    }


def sync_submission(submission, config):
    existing = db.session.execute(
        db.select(ExternalRecord).filter_by(submission_id=submission.id, service=SERVICE)
    ).scalar_one_or_none()
    if existing is not None and existing.state == "sent":
        return f"Already recorded as {existing.remote_id or 'received'}"
    body = json.dumps(submission_record(submission), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key(submission),
        "X-Signature": signature(config["ADMIN_SYNC_SECRET"], body),
    }
    try:
        response = requests.post(config["ADMIN_SYNC_URL"], data=body, headers=headers,
                                 timeout=config["ADMIN_SYNC_TIMEOUT"])
    except requests.RequestException as exc:
        raise RecordsError(f"no answer from the records system ({type(exc).__name__})") from exc
    if response.status_code == 429:
        raise RetryLater("The student-records system asked us to slow down",
                         retry_after_seconds(response.headers.get("Retry-After"), 60))
    if refused_for_good(response.status_code):
        raise Refused(refusal("The student-records system", response),
                      "The student-records system refused the record")
    if response.status_code >= 400:
        raise RecordsError(f"the records system answered {response.status_code}: "
                           f"{response.text[:200]}")
    remote_id = str((response.json() if response.content else {}).get("id", ""))
    record = existing or ExternalRecord(submission_id=submission.id, service=SERVICE)
    record.remote_id = remote_id or None
    record.state = "sent"
    db.session.add(record)
    db.session.commit()
    return f"Recorded in student records as {remote_id or 'received'}"
