from flask import current_app

from app.extensions import db
from app.pipeline import StepSkipped
from app.services import thumbnails
from app.services.storage import storage_for


def perform(submission, step_run):
    target = storage_for(current_app).thumbnail_path(submission.id)
    try:
        kind = thumbnails.render(submission.stored_path, submission.content_type,
                                 submission.filename, target)
    except thumbnails.NoPreview as reason:
        # The file itself stands; only its picture is missing, and a retry would draw nothing.
        raise StepSkipped(f"No preview: {reason}.") from None
    submission.thumbnail_path = str(target)
    db.session.commit()
    return f"Preview ready ({kind})"
