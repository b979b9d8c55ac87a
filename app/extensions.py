import redis
from flask import current_app, g, has_request_context
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=naming_convention))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def commit_keeping_loaded():
    """Commit, and give the connection back to the pool, without expiring what the session has
    loaded: a request that goes on using those rows (to answer, or after reading a body) does
    not read them again."""
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def get_redis():
    """The app's Redis client, created on first use (nothing connects at import or start-up).
    In a web request, the request's own (request_redis)."""
    if has_request_context():
        return request_redis()
    client = current_app.extensions.get("submissions_redis")
    if client is None:
        # redis-py's own retries (ten, backing off, timeouts too) kept an outage silent for
        # minutes. One retry at once reopens a connection a restart closed; anything more
        # reaches the caller, and the worker and scheduler say so and wait
        # (jobs/redis_outage.py).
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=10,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        current_app.extensions["submissions_redis"] = client
    return client


def request_redis():
    """This request's Redis client. Redis only carries work and live events, and every caller
    in a request goes on without it (an upload is received all the same, and the reconciler
    queues its processing once Redis answers), so a request never waits long for it: a call
    fails after REDIS_REQUEST_TIMEOUT seconds, and after one failure the rest fail at once."""
    if "redis" not in g:
        g.redis = RequestRedis(connection_pool=_request_pool())
    return g.redis


def _request_pool():
    """The connections requests share, for the Redis at REDIS_URL now."""
    url = current_app.config["REDIS_URL"]
    kept = current_app.extensions.get("submissions_request_redis")
    if kept is not None and kept[0] == url:
        return kept[1]
    if kept is not None:
        kept[1].disconnect()
    timeout = current_app.config["REDIS_REQUEST_TIMEOUT"]
    # One retry, at once, and only where no answer was awaited: a connection Redis closed
    # (a restart) is opened again; a refused one fails; a timeout is never waited out twice.
    pool = redis.ConnectionPool.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    current_app.extensions["submissions_request_redis"] = (url, pool)
    return pool


class RequestRedis(redis.Redis):
    unanswered = None  # why Redis failed this request, once it has

    def execute_command(self, *args, **options):
        return self.answered(super().execute_command, *args, **options)

    def pipeline(self, transaction=True, shard_hint=None):
        return RequestPipeline(self, transaction, shard_hint)

    def answered(self, call, *args, **kwargs):
        if self.unanswered is not None:
            raise redis.ConnectionError(f"Redis failed earlier in this request: {self.unanswered}")
        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            self.unanswered = error
            raise


class RequestPipeline(Pipeline):
    def __init__(self, client, transaction, shard_hint):
        super().__init__(client.connection_pool, client.response_callbacks, transaction,
                         shard_hint)
        self.request_client = client

    def execute(self, raise_on_error=True):
        return self.request_client.answered(super().execute, raise_on_error)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    # WAL lets the web process read while a worker writes; the timeout waits out short locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
