"""POST /api/v1/inbound/records: messages from the student-records system, machine to machine.
Nobody logs in: the signature, made as the outbound sync makes it and with its secret, is the
credential (app/inbound.py)."""

import logging

from flask import current_app, jsonify, request
from redis.exceptions import RedisError

from app import inbound
from app.api import bp
from app.api.routes import iso
from app.errors import RequestRefused
from app.models import utcnow

log = logging.getLogger(__name__)


def receipt_json(row):
    return {"message_id": row.message_id, "state": row.state,
            "received_at": iso(row.received_at)}


@bp.post("/inbound/records")
def receive_records_message():
    secret = current_app.config["ADMIN_SYNC_SECRET"]
    if not secret:
        raise RequestRefused(503, "not_configured",
                       "Messages from the student-records system are off: "
                       "ADMIN_SYNC_SECRET is not set.")
    if (request.content_length or 0) > inbound.MAX_BODY:
        raise RequestRefused(413, "too_large",
                             f"A message may be at most {inbound.MAX_BODY} bytes.")
    body = request.get_data()
    header = request.headers.get("X-Signature")
    if not header:
        raise RequestRefused(401, "signature_missing",
                       "Sign the body: X-Signature: sha256=<hex HMAC-SHA256 of the raw body>.")
    if not inbound.signed(secret, body, header):
        raise RequestRefused(401, "bad_signature", "The signature does not match the body.")
    try:
        message = inbound.read_message(body, utcnow())
    except inbound.StaleMessage as exc:
        raise RequestRefused(401, "stale_message", str(exc)) from None
    except inbound.MessageError as exc:
        raise RequestRefused(400, "bad_message", str(exc)) from None
    row, created = inbound.record(message)
    if created:
        try:
            inbound.enqueue_apply(row.id)
        except RedisError as exc:  # recorded: the reconciler queues it once Redis answers
            log.warning("event=inbound_enqueue_failed inbound_id=%s message_id=%s error=%r",
                        row.id, row.message_id, exc)
    log.info("event=inbound_received inbound_id=%s message_id=%s kind=%s new=%s",
             row.id, row.message_id, row.kind, created)
    response = jsonify(receipt_json(row))
    response.status_code = 202 if created else 200
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response
