from flask import current_app

from app.pipeline import StepSkipped
from app.services import admin_sync


def perform(submission, step_run):
    if not current_app.config["ADMIN_SYNC_URL"]:
        raise StepSkipped("Not sent: no student-records system is configured (ADMIN_SYNC_URL)")
    return admin_sync.sync_submission(submission, current_app.config)
