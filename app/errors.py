from flask import render_template, request
from werkzeug.exceptions import HTTPException

from app.api import error_response


def _wants_json():
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def init_app(app):
    @app.errorhandler(HTTPException)
    def http_error(exc):
        if _wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            response = error_response(exc.code, code, exc.description)
        else:
            response = render_template("error.html", error=exc), exc.code
        if exc.code == 413 and not _wants_json():
            limit = app.config["MAX_UPLOAD_MB"]
            response = render_template(
                "error.html", error=exc, message=f"Files may be at most {limit} MB."
            ), 413
        return response
