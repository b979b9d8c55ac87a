from flask import current_app

from app.services import similarity


def perform(submission, step_run):
    return similarity.check(submission, current_app.config)
