from flask import current_app

from app.services import admin_sync
from app.steps import StepSkipped


def perform(submission, step_run):
    config = current_app.config
    if not config["ADMIN_SYNC_URL"]:
        raise StepSkipped("Not sent: no student-records system is configured (ADMIN_SYNC_URL)")
    if not config["ADMIN_SYNC_SECRET"]:
        raise StepSkipped("Not sent: ADMIN_SYNC_SECRET is not set, so the record cannot be signed")
    return admin_sync.sync_submission(submission, config)
