import hmac

from flask import Response, current_app, jsonify, request
from flask_login import current_user

from app.ops import bp, metrics
from app.ops.readiness import readiness


@bp.route("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz():
    answers, ready = readiness(current_app.config)
    if ready:
        return jsonify(answers)
    failed = [name for name, answer in answers.items() if answer.startswith("failed")]
    return jsonify({**answers, "failed": failed}), 503


def scraper_token_sent():
    token = current_app.config["METRICS_TOKEN"]
    sent = request.headers.get("Authorization", "")
    return bool(token) and sent.startswith("Bearer ") and hmac.compare_digest(
        sent.removeprefix("Bearer ").encode(), token.encode())


def is_staff_somewhere(user):
    return user.is_authenticated and (
        user.is_admin or any(e.role == "staff" for e in user.enrollments))


@bp.route("/metrics")
def prometheus_metrics():
    # Queue depths and step timings tell an outsider how busy and how built the service is.
    if not scraper_token_sent():
        if not current_user.is_authenticated:
            return Response("Log in as staff, or send the METRICS_TOKEN as a bearer token.\n",
                            401, {"WWW-Authenticate": 'Bearer realm="metrics"'},
                            content_type="text/plain")
        if not is_staff_somewhere(current_user):
            return Response("Metrics are for staff.\n", 403, content_type="text/plain")
    return Response(metrics.exposition(),
                    content_type="text/plain; version=0.0.4; charset=utf-8")
