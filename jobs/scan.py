import logging
from pathlib import Path

from flask import current_app

from app.extensions import db
from app.services import clamav
from app.services.storage import storage_for
from app.steps import SubmissionRejected

log = logging.getLogger(__name__)

# What each of clamd's "could not check it all" verdicts means for the student.
LIMIT_REASONS = {
    "MaxRecursion": "it has archives nested too deeply inside each other",
    "MaxScanSize": "it unpacks to more data than the scanner checks",
    "MaxFileSize": "a file inside it is too large for the scanner",
    "MaxFiles": "it holds too many files",
}


def received_file(submission, storage):
    """The file to scan: still in incoming, or already quarantined by a run that then crashed."""
    if submission.incoming_path:
        for path in (Path(submission.incoming_path),
                     storage.quarantine_path(submission.incoming_path, submission.id)):
            if path.exists():
                return path
    raise FileNotFoundError("the received file is missing from incoming and from quarantine")


def rejection(result):
    if result.limit_exceeded:
        limit = result.signature.rsplit(".", 1)[-1]
        reason = LIMIT_REASONS.get(limit, result.signature)
        return (
            f"Not accepted: the file could not be checked completely for viruses because "
            f"{reason} ({result.signature}). Submit the files unpacked or as a simpler archive."
        )
    return (
        f"Not accepted: {result.scanner} found {result.signature} in this file. "
        "Check your computer for malware, then submit a clean copy."
    )


def perform(submission, step_run):
    storage = storage_for(current_app)
    path = received_file(submission, storage)
    result = clamav.scanner_for(current_app.config).scan(path)
    if result.infected:
        submission.incoming_path = str(storage.quarantine(path, submission.id))
        db.session.commit()
        log.warning("event=quarantined submission_id=%s signature=%s job_id=%s",
                    submission.id, result.signature, step_run.job_id)
        raise SubmissionRejected(rejection(result))
    return f"No threats found; scanned by {result.scanner}"
