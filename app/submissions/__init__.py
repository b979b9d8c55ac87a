from flask import Blueprint

bp = Blueprint("submissions", __name__)

from app.submissions import requeue, views  # noqa: E402,F401
