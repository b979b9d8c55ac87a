from flask import current_app

from app.extensions import get_redis
from app.services import similarity, turnitin


def perform(submission, step_run):
    config = current_app.config
    if config["TURNITIN_URL"]:
        return turnitin.check(submission, config, get_redis())
    return similarity.check(submission)
