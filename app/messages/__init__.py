from flask import Blueprint

from app.messages.text import linkify

bp = Blueprint("messages", __name__)
bp.add_app_template_filter(linkify, "linkify")

from app.messages import views  # noqa: E402,F401
