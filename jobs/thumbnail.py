from flask import current_app

from app.services import thumbnails
from app.services.preview_process import PreviewProcess
from app.services.storage import storage_for
from app.steps import STEP_BY_NAME, StepSkipped

# One child drawing previews per worker process, started at the first preview.
PREVIEWS = PreviewProcess()
# The drawing is stopped a little before RQ's own timeout, so the step records why.
DRAW_SECONDS = STEP_BY_NAME["thumbnail"].timeout - 10


def perform(submission, step_run):
    target = storage_for(current_app).thumbnail_path(submission.id)
    try:
        kind = PREVIEWS.render(submission.stored_path, submission.content_type,
                               submission.filename, target, timeout=DRAW_SECONDS)
    except thumbnails.NoPreview as reason:
        # The file itself stands; only its picture is missing, and a retry would draw nothing.
        raise StepSkipped(f"No preview: {reason}.") from None
    submission.thumbnail_path = str(target)
    return f"Preview ready ({kind})"
