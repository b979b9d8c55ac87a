from pathlib import Path

from flask import current_app

from app.extensions import db
from app.services.storage import storage_for


def perform(submission, step_run):
    storage = storage_for(current_app)
    kept = storage.object_path(submission.sha256)
    if submission.incoming_path and Path(submission.incoming_path).exists():
        kept = storage.store(submission.incoming_path, submission.sha256)
    elif not kept.exists():
        raise FileNotFoundError("the received file is missing from incoming and from storage")
    submission.stored_path = str(kept)
    incoming, submission.incoming_path = submission.incoming_path, None
    db.session.commit()
    if incoming:
        Path(incoming).unlink(missing_ok=True)
    return "Stored safely; checksum verified"
