from flask import current_app

from app.services import mailer


def perform(submission, step_run):
    return mailer.deliver_receipt(submission, current_app.config)
