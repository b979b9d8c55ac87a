"""The browser's acknowledgement that a flash message has been on screen."""

from flask import jsonify

from app.api import bp
from app.api.routes import iso
from app.errors import RequestRefused
from app.flash import acknowledge
from app.submissions.access import require_user


@bp.post("/flash/<int:flash_id>/ack")
def acknowledge_flash(flash_id):
    message = acknowledge(require_user(), flash_id)
    if message is None:
        raise RequestRefused(404, "not_found", "No such message.")
    return jsonify({"id": message.id, "acked_at": iso(message.acked_at)})
