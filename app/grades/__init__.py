from flask import Blueprint

bp = Blueprint("grades", __name__)

from app.grades import views  # noqa: E402,F401
