from flask import Blueprint, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_login import current_user
from werkzeug.exceptions import HTTPException

from app.errors import RequestRefused, error_response
from app.extensions import csrf
from app.submissions.intake import release_connection

bp = Blueprint("api", __name__)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, but a body nested too deeply to decode is malformed JSON like any other."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


@bp.errorhandler(RequestRefused)
def _refused(exc):
    return error_response(exc.status, exc.code, exc.message, exc.retry_after)


@bp.errorhandler(HTTPException)
def _http_error(exc):
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if exc.code == 413 and limit and (request.content_length or 0) > limit:
        # Werkzeug refused the body before intake saw it; say the limit as intake would.
        return error_response(413, "too_large",
                              f"Files may be at most {current_app.config['MAX_UPLOAD_MB']} MB.")
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name)


@bp.before_request
def _session_requests_need_csrf():
    # Bearer-token callers cannot be tricked by another site; cookie-session callers can.
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    # Loading the user first settles how the request was authenticated.
    if not current_user.is_authenticated or request.environ.get("submissions.auth") == "bearer":
        return
    # The token may come in the body, which can take a while to arrive.
    release_connection()
    csrf.protect()


from app.api import flash, grades, inbound, messages, openapi, routes  # noqa: E402,F401
