from pathlib import Path

from flask import current_app

from app.extensions import db
from app.pipeline import SubmissionRejected
from app.services import clamav
from app.services.storage import storage_for


def perform(submission, step_run):
    path = submission.incoming_path or submission.stored_path
    if not path or not Path(path).exists():
        raise FileNotFoundError("the received file is missing")
    result = clamav.scanner_for(current_app.config).scan(path)
    if result.infected:
        submission.incoming_path = str(storage_for(current_app).quarantine(path, submission.id))
        db.session.commit()
        raise SubmissionRejected(
            f"Not accepted: the file contains {result.signature}. "
            "Clean the file and submit again."
        )
    return f"No threats found ({result.scanner})"
