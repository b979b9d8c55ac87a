"""Can this process do its work? Each check answers "ok", "not configured" or what went wrong.
Redis and clamd are given TIMEOUT seconds; the database check uses the app's own engine and pool,
so it fails as fast as a request would."""

from redis import Redis
from sqlalchemy import text

from app.extensions import db
from app.services import clamav

TIMEOUT = 2
MAX_ANSWER = 300


def check_database():
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def check_redis(url):
    client = Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_clamd(config):
    scanner = clamav.scanner_for(config)
    if not isinstance(scanner, clamav.ClamdScanner):
        return "not configured"
    scanner.timeout = TIMEOUT
    # The scan step's own way in, so the probe meets exactly what the scans will meet.
    client = scanner._connect()
    try:
        if not client.ping():
            raise ConnectionError(f"clamd at {scanner.address} did not answer PONG")
    finally:
        client.clamd_socket.close()
    return "ok"


def readiness(config):
    """({dependency: answer}, ready) for the database, Redis and clamd."""
    checks = {
        "database": check_database,
        "redis": lambda: check_redis(config["REDIS_URL"]),
        "clamd": lambda: check_clamd(config),
    }
    answers = {}
    for name, check in checks.items():
        try:
            answers[name] = check()
        except Exception as exc:  # any failure means "not ready", and the probe says which
            answers[name] = f"failed: {type(exc).__name__}: {exc}"[:MAX_ANSWER]
    ready = all(answer in ("ok", "not configured") for answer in answers.values())
    return answers, ready
