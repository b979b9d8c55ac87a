from flask import Response, current_app, jsonify

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


@bp.route("/metrics")
def prometheus_metrics():
    return Response(metrics.exposition(),
                    content_type="text/plain; version=0.0.4; charset=utf-8")
