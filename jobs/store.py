from pathlib import Path

from flask import current_app

from app.services.storage import storage_for


def perform(submission, step_run):
    kept = storage_for(current_app).store(submission.incoming_path, submission.sha256)
    # The kept copy is verified and durable before the received one goes; the paths below are
    # committed with the step's outcome. A crash in between leaves at worst a stale incoming
    # path, and the next run finds the verified copy already stored.
    if submission.incoming_path:
        Path(submission.incoming_path).unlink(missing_ok=True)
    submission.stored_path = str(kept)
    submission.incoming_path = None
    return f"Stored safely; SHA-256 {submission.sha256[:12]}… verified"
