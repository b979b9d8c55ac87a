"""Accepting an upload: everything that must happen before the student gets a receipt."""

import functools
import logging
from pathlib import Path

from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import pipeline, ratelimit
from app.deadlines import deadline_for
from app.errors import RequestRefused
from app.events.publisher import emit
from app.events.topics import submission_topics
from app.extensions import commit_keeping_loaded, db
from app.models import Submission, utcnow
from app.ops import metrics
from app.services.storage import TooLarge, storage_for
from app.submissions import filetypes

log = logging.getLogger(__name__)


def _counting_refusals(function):
    """Every refused upload is counted once, by its error code, where it leaves intake."""

    @functools.wraps(function)
    def counted(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except RequestRefused as refusal:
            metrics.count_intake(refusal.code)
            raise

    return counted


def check_capacity(student):
    config = current_app.config
    wait = ratelimit.wait_seconds("intake", student.id, *config["INTAKE_RATE_LIMIT"])
    if wait:
        raise RequestRefused(429, "rate_limited",
                             f"Too many uploads in a short time; try again in {wait} s.", wait)
    backlog = pipeline.backlog()
    if backlog is not None and backlog > config["INTAKE_MAX_BACKLOG"]:
        log.warning("event=intake_busy backlog=%s", backlog)
        raise RequestRefused(503, "busy", "We are receiving a lot of work right now; "
                             "your upload will be retried shortly.", config["INTAKE_RETRY_AFTER"])


def release_connection():
    """End the transaction opened to find the student and the assignment, before the body is
    read: a file can take a while to arrive, and meanwhile the connection serves other
    requests. The rows read stay loaded; the deadline is checked against the time the
    upload arrived, as before."""
    commit_keeping_loaded()


@_counting_refusals
def check_readable_form(request):
    """Refuse a body that is not a multipart form, or one Werkzeug dropped as unparseable.
    The body is read here, so the database connection is given back first."""
    release_connection()
    if request.mimetype != "multipart/form-data":
        raise RequestRefused(415, "not_multipart",
                             "Send the file as multipart/form-data, in a field named file.")
    # Werkzeug silently yields an empty form for a missing boundary, a body cut short or a
    # part header that is not UTF-8; without this the student would be told to choose a file.
    if request.content_length and not request.form and not request.files:
        raise RequestRefused(400, "unreadable_upload",
                             "The upload could not be read: it arrived incomplete or malformed, "
                             "or its file name is not valid UTF-8. Please try again.")


def find_by_key(student, assignment, key):
    """The upload this key already recorded for this assignment; a key is scoped to one."""
    if not key:
        return None
    return db.session.execute(
        db.select(Submission).filter_by(student_id=student.id, assignment_id=assignment.id,
                                        idempotency_key=key)
    ).scalar_one_or_none()


def check_open(deadline, at=None):
    """`deadline` is the student's own (app.deadlines): an extension moves their cut-off."""
    if not deadline.is_open(at):
        raise RequestRefused(
            403, "closed",
            f"Submissions closed at {deadline.cutoff_at:%Y-%m-%d %H:%M} UTC.",
        )


@_counting_refusals
def accept_upload(student, assignment, upload, idempotency_key=None):
    """Record an upload and queue its processing; returns (submission, created)."""
    received_at = utcnow()
    if assignment is None or student.course_role(assignment.course_id) != "student":
        raise RequestRefused(404, "not_found", "No such assignment.")
    idempotency_key = idempotency_key or None
    if idempotency_key is not None and len(idempotency_key) > 100:
        raise RequestRefused(400, "bad_idempotency_key",
                             "Idempotency-Key may be at most 100 characters.")
    existing = find_by_key(student, assignment, idempotency_key)
    if existing is not None:
        return existing, False
    deadline = deadline_for(assignment, student.id)
    check_open(deadline, received_at)
    check_capacity(student)
    if upload is None or not upload.filename:
        raise RequestRefused(400, "no_file", "Choose a file to upload.")
    try:
        filename = filetypes.clean_filename(upload.filename)
    except filetypes.BadFilename as exc:
        raise RequestRefused(400, "bad_filename", str(exc)) from None
    ext = filetypes.extension(filename)
    if ext not in assignment.allowed_extensions:
        raise RequestRefused(
            415, "type_not_allowed",
            f"This assignment accepts {', '.join(assignment.allowed_extensions)} files only.",
        )

    limit_mb = min(assignment.max_size_mb, current_app.config["MAX_UPLOAD_MB"])
    storage = storage_for(current_app)
    try:
        path, size, sha256, head = storage.receive(upload.stream, limit_mb * 1024 * 1024)
    except TooLarge:
        raise RequestRefused(413, "too_large", f"Files may be at most {limit_mb} MB.") from None
    except OSError as exc:
        log.error("event=intake_write_failed error=%r", exc)
        raise RequestRefused(503, "unavailable", "We cannot store files right now; "
                             "your upload will be retried shortly.",
                             current_app.config["INTAKE_RETRY_AFTER"]) from None

    try:
        if size == 0:
            raise RequestRefused(400, "empty_file", "The file is empty.")
        if not filetypes.content_matches(ext, head):
            raise RequestRefused(
                415, "type_mismatch",
                f"The file's content is not a .{ext} file; check you chose the right file.",
            )
        submission, queued = _record(student, assignment, filename, ext, path, size, sha256,
                                     received_at, idempotency_key, deadline.is_late(received_at))
    except RequestRefused:
        Path(path).unlink(missing_ok=True)
        raise
    except IntegrityError:
        # The same upload (key and assignment) arrived twice at once: the other request
        # recorded it. Any other conflict is an error, never another upload's receipt.
        db.session.rollback()
        Path(path).unlink(missing_ok=True)
        existing = find_by_key(student, assignment, idempotency_key)
        if existing is None:
            raise
        return existing, False
    except Exception:
        db.session.rollback()
        Path(path).unlink(missing_ok=True)
        raise

    log.info("event=received submission_id=%s student_id=%s size=%s late=%s",
             submission.id, student.id, size, submission.late)
    pipeline.enqueue_claimed(submission.id, queued)
    metrics.count_intake("accepted")
    return submission, True


def _record(student, assignment, filename, ext, path, size, sha256, received_at, key, late):
    submission = Submission(
        assignment=assignment,
        student=student,
        filename=filename,
        content_type=filetypes.content_type(ext),
        size=size,
        sha256=sha256,
        incoming_path=str(path),
        received_at=received_at,
        late=late,
        status="received",
        status_detail="Received; checks will start shortly",
        idempotency_key=key or None,
    )
    # Recorded with its first step already queued, in one transaction.
    queued = pipeline.create_steps(submission, queue_first=True)
    db.session.add(submission)
    db.session.flush()
    emit("submission", pipeline.submission_payload(submission), submission_topics(submission),
         submission.id)
    pipeline.announce(queued)
    db.session.commit()
    return submission, queued
