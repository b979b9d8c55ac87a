"""The receipt email step; the outbox row in app.services.mailer makes it one message per
submission however often the step runs."""

from flask import current_app

from app.services import mailer


def perform(submission, step_run):
    return mailer.deliver_receipt(submission, current_app.config)
