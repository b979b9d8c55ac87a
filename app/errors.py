import logging

from flask import current_app, g, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, ServiceUnavailable, default_exceptions

from app.extensions import db, login_manager

log = logging.getLogger(__name__)


class RequestRefused(Exception):
    """A request the service will not carry out, and how to say so. The API answers it as JSON
    with the status; the upload page shows the message on its form; any other page answers as
    abort(status) would."""

    def __init__(self, status, code, message, retry_after=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def error_response(status, code, message, retry_after=None):
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return jsonify({"error": {"code": code, "message": message}}), status, headers


def _wants_json():
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def http_error(exc):
    if _wants_json():
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code, code, exc.description)
    message = None
    if exc.code == 413:
        message = f"Files may be at most {current_app.config['MAX_UPLOAD_MB']} MB."
    return render_template("error.html", error=exc, message=message), exc.code


def refused(exc):
    # The API answers a refusal itself, in JSON; a page answers as abort(status) would.
    return http_error(default_exceptions[exc.status]())


def database_unavailable(exc):
    # Connection-level failures only; anything else is a bug and should stay a 500.
    if not exc.connection_invalidated and not _is_connection_error(exc):
        raise exc
    log.error("event=database_unavailable path=%s error=%r", request.path, exc.orig)
    return _unavailable("unavailable",
                        "The service is briefly unavailable; please try again in a few seconds.")


def database_busy(exc):
    # Every pooled connection is taken (a deadline spike): ask the client to come back soon.
    log.warning("event=database_busy path=%s error=%r", request.path, exc)
    return _unavailable("busy", "We are receiving a lot of work right now; "
                        "please try again in a few seconds.")


def _unavailable(code, message):
    db.session.rollback()
    # Rendering would otherwise ask the database for the logged-in user again.
    g._login_user = login_manager.anonymous_user()
    retry_after = current_app.config["INTAKE_RETRY_AFTER"]
    if _wants_json():
        return error_response(503, code, message, retry_after)
    page = render_template("unavailable.html", error=ServiceUnavailable(), message=message)
    return page, 503, {"Retry-After": str(retry_after)}


def _is_connection_error(exc):
    text = str(exc.orig).lower()
    return any(sign in text for sign in (
        "could not connect", "connection refused", "server closed the connection",
        "terminating connection", "database is locked", "unable to open database",
        "the database system is", "connection already closed", "disk i/o error",
    ))


def init_app(app):
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(RequestRefused, refused)
    app.register_error_handler(DBAPIError, database_unavailable)
    app.register_error_handler(PoolTimeout, database_busy)
