from flask import Blueprint
from flask_login import current_user

bp = Blueprint("flash", __name__)

from app.flash.messages import acknowledge, pending_for, send_flash  # noqa: E402

__all__ = ["acknowledge", "bp", "pending_for", "send_flash"]


@bp.app_template_global()
def pending_flashes():
    """Unacknowledged messages for the page to show again, as the live event carries them."""
    if not current_user.is_authenticated:
        return []
    return [message.to_dict() for message in pending_for(current_user)]
