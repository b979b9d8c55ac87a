import os

# Every address by default, as a platform routing to $PORT needs; `make run` asks for loopback.
bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "2000"))
# Event streams stay open; gevent workers heartbeat the arbiter between requests.
timeout = 60
graceful_timeout = 20
accesslog = "-"
access_log_format = 'method=%(m)s path="%(U)s" status=%(s)s bytes=%(B)s duration_ms=%(M)s'


def post_fork(server, worker):
    # psycopg2 otherwise blocks the whole gevent worker while it waits on PostgreSQL.
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
