import math
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

BASE_DIR = Path(__file__).resolve().parent.parent
INSTANCE_DIR = BASE_DIR / "instance"


def _setting(name, default, parse, form, acceptable=None, unacceptable=""):
    """A setting from the environment, or `default` when unset. A value `parse` cannot read
    (described by `form`), or one `acceptable` turns down, stops the app naming the setting."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        parsed = parse(value)
    except ValueError:
        raise ValueError(f"{name} must be {form}; got {value!r}") from None
    if acceptable is not None and not acceptable(parsed):
        raise ValueError(f"{name} {unacceptable}; got {value!r}")
    return parsed


def _int(name, default, minimum=None):
    return _setting(name, default, int, "a whole number",
                    None if minimum is None else lambda number: number >= minimum,
                    f"must be at least {minimum}")


def _float(name, default, minimum):
    return _setting(name, default, float, "a number",
                    lambda number: math.isfinite(number) and number >= minimum,
                    f"must be a number of at least {minimum}")


def _seconds(name, default):
    return _setting(name, default, float, "a number of seconds",
                    lambda seconds: 0 < seconds < math.inf, "must be a positive number of seconds")


def _rate(name, default):
    """A rate limit written "attempts/seconds" (e.g. "20/60")."""
    def parse(value):
        attempts, _, seconds = value.partition("/")
        return int(attempts), int(seconds)

    return _setting(name, default, parse, '"attempts/seconds", such as "20/60"',
                    lambda limit: min(limit) >= 1,
                    "needs at least 1 attempt in at least 1 second")


def database_url(raw):
    """Accept Heroku-style postgres:// URLs and use the psycopg2 driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg2://" + raw[len(prefix):]
    return raw


class Config:
    ENV_NAME = "development"
    SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
    SQLALCHEMY_DATABASE_URI = database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'submissions.db'}"
    )
    REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    # How long a web request waits for Redis before going on without it (an upload is received
    # all the same; the reconciler queues its processing once Redis answers).
    REDIS_REQUEST_TIMEOUT = _seconds("REDIS_REQUEST_TIMEOUT", 1.0)
    STORAGE_DIR = os.environ.get("STORAGE_DIR") or str(INSTANCE_DIR / "storage")
    CLAMD_SOCKET = os.environ.get("CLAMD_SOCKET") or None
    CLAMD_URL = os.environ.get("CLAMD_URL") or None
    SMTP_URL = os.environ.get("SMTP_URL") or None
    TURNITIN_URL = os.environ.get("TURNITIN_URL") or None
    TURNITIN_API_KEY = os.environ.get("TURNITIN_API_KEY") or None
    TURNITIN_TIMEOUT = _seconds("TURNITIN_TIMEOUT", 30.0)
    # One job polls for a report this long, every TURNITIN_POLL_INTERVAL, then gives the
    # worker back and runs again TURNITIN_RECHECK_SECONDS later.
    TURNITIN_POLL_SECONDS = _float("TURNITIN_POLL_SECONDS", 45.0, minimum=0)
    TURNITIN_POLL_INTERVAL = _seconds("TURNITIN_POLL_INTERVAL", 3.0)
    TURNITIN_RECHECK_SECONDS = _int("TURNITIN_RECHECK_SECONDS", 60, minimum=1)
    # Failures in a row after which every worker stops calling Turnitin for the cooldown.
    TURNITIN_CIRCUIT_FAILURES = _int("TURNITIN_CIRCUIT_FAILURES", 5, minimum=1)
    TURNITIN_CIRCUIT_COOLDOWN = _int("TURNITIN_CIRCUIT_COOLDOWN", 60, minimum=1)
    ADMIN_SYNC_URL = os.environ.get("ADMIN_SYNC_URL") or None
    ADMIN_SYNC_SECRET = os.environ.get("ADMIN_SYNC_SECRET") or None
    ADMIN_SYNC_TIMEOUT = _seconds("ADMIN_SYNC_TIMEOUT", 15.0)
    # /metrics is for the course staff and admins logged in, or a scraper sending this token
    # as `Authorization: Bearer ...`.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    MAX_UPLOAD_MB = _int("MAX_UPLOAD_MB", 25, minimum=1)
    INTAKE_MAX_BACKLOG = _int("INTAKE_MAX_BACKLOG", 5000, minimum=0)
    PUBLIC_URL = (os.environ.get("PUBLIC_URL")
                  or f"http://127.0.0.1:{_int('PORT', 5000, minimum=1)}")
    MAIL_FROM = os.environ.get("MAIL_FROM") or "Submissions <no-reply@submissions.local>"
    # Retry delays are multiplied by this; tests set it to 0 so retries run at once.
    RETRY_BACKOFF_SCALE = _float("RETRY_BACKOFF_SCALE", 1.0, minimum=0)
    # (attempts, seconds): per student for uploads, per account and address for logins.
    INTAKE_RATE_LIMIT = _rate("INTAKE_RATE_LIMIT", (20, 60))
    LOGIN_RATE_LIMIT = _rate("LOGIN_RATE_LIMIT", (10, 300))
    # Messages one user may post to conversations (all of them together), per seconds.
    MESSAGE_RATE_LIMIT = _rate("MESSAGE_RATE_LIMIT", (10, 60))
    # Seconds a client is asked to wait when intake is overloaded.
    INTAKE_RETRY_AFTER = _int("INTAKE_RETRY_AFTER", 5, minimum=1)
    RECONCILE_EVERY_SECONDS = _int("RECONCILE_EVERY_SECONDS", 20, minimum=1)
    ROLLUP_EVERY_SECONDS = _int("ROLLUP_EVERY_SECONDS", 12, minimum=1)
    # Dashboard roll-ups kept in the event trail: an hour's worth at the default pace.
    DASHBOARD_EVENTS_KEPT = _int("DASHBOARD_EVENTS_KEPT", 300, minimum=1)
    RECONCILE_GRACE_SECONDS = _int("RECONCILE_GRACE_SECONDS", 15, minimum=0)
    # An email (receipt or grade) that used up its retries is tried again by the reconciler
    # this much later; meanwhile staff see it failed.
    EMAIL_RETRY_AFTER_FAILURE_SECONDS = _int("EMAIL_RETRY_AFTER_FAILURE_SECONDS", 1800,
                                             minimum=0)
    # Workers heartbeat their running job every 10 s (worker.py); three missed beats is dead.
    WORKER_DEAD_AFTER_SECONDS = _int("WORKER_DEAD_AFTER_SECONDS", 35, minimum=1)
    # A worker starts afresh after this many jobs, so nothing a job leaves behind adds up.
    WORKER_JOBS_PER_PROCESS = _int("WORKER_JOBS_PER_PROCESS", 2000, minimum=1)
    # A worker's CPU priority (a nice value, 0 to 19) below the web's: on a shared machine
    # receipts come first at a deadline; alone on its own machine it changes nothing.
    WORKER_NICENESS = _int("WORKER_NICENESS", 10, minimum=0)
    SSE_HEARTBEAT_SECONDS = _seconds("SSE_HEARTBEAT_SECONDS", 15.0)
    # How long the event hub holds an event back for a lower id still to arrive (ordering.py).
    SSE_GAP_WAIT_SECONDS = _seconds("SSE_GAP_WAIT_SECONDS", 2.0)
    WTF_CSRF_TIME_LIMIT = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    MIGRATIONS_DIR = str(BASE_DIR / "migrations")
    # Connections per process. A request that cannot get one within DB_POOL_TIMEOUT seconds
    # is answered 503 with Retry-After (the upload page retries by itself), not kept waiting.
    DB_POOL_SIZE = _int("DB_POOL_SIZE", 10, minimum=1)
    DB_MAX_OVERFLOW = _int("DB_MAX_OVERFLOW", 10)
    DB_POOL_TIMEOUT = _int("DB_POOL_TIMEOUT", 5, minimum=0)  # whole seconds, as SQLAlchemy takes it


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    RETRY_BACKOFF_SCALE = _float("RETRY_BACKOFF_SCALE", 0.0, minimum=0)
    # The suite's workers share the machine with other tests, not with a web to yield to.
    WORKER_NICENESS = _int("WORKER_NICENESS", 0, minimum=0)


CONFIGS = {
    "development": Config,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def engine_options(config):
    """SQLAlchemy engine options: the configured ones, with the pool sized from the config."""
    options = dict(config["SQLALCHEMY_ENGINE_OPTIONS"])
    if _has_queue_pool(config["SQLALCHEMY_DATABASE_URI"]):
        options.setdefault("pool_size", config["DB_POOL_SIZE"])
        options.setdefault("max_overflow", config["DB_MAX_OVERFLOW"])
        options.setdefault("pool_timeout", config["DB_POOL_TIMEOUT"])
    return options


def _has_queue_pool(uri):
    # In-memory SQLite keeps one shared connection (Flask-SQLAlchemy's StaticPool, or the
    # driver's per-thread pool): there is no pool to size.
    url = make_url(uri)
    if url.get_backend_name() == "sqlite" and (
            url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"):
        return False
    return issubclass(url.get_dialect().get_pool_class(url), QueuePool)


def config_for_environment():
    return CONFIGS[os.environ.get("APP_ENV", "development")]
