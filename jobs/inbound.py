"""Applying the student-records system's messages, on the `records` queue. Safe to run twice:
the message's row says whether it is still to be applied."""

import logging

from rq import get_current_job

from app.extensions import db
from app.inbound import apply_message, give_up

log = logging.getLogger(__name__)


def apply(inbound_id):
    job = get_current_job()
    job_id = job.id if job is not None else None
    try:
        state = apply_message(inbound_id)
    except Exception as exc:
        db.session.rollback()
        if job is None or not job.retries_left:
            give_up(inbound_id, f"It could not be applied: {exc!r}")
        log.warning("event=inbound_failed job_id=%s inbound_id=%s error=%r",
                    job_id, inbound_id, exc)
        raise
    log.info("event=inbound_applied job_id=%s inbound_id=%s state=%s", job_id, inbound_id, state)
    return state
