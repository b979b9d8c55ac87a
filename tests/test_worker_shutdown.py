"""A worker stopped by SIGTERM while idle leaves Redis tidy, wherever the signal caught it."""

from rq import Worker

from app.extensions import get_redis
from worker import build_worker


def test_a_worker_stopped_between_a_redis_command_and_its_reply_still_unregisters(app):
    worker = build_worker(["maintenance"], preload=False)
    worker.register_birth()
    assert [w.name for w in Worker.all(connection=get_redis())] == [worker.name]
    # Where StopRequested, raised by the signal handler, leaves a connection: a command sent,
    # its reply unread, the connection back in the pool.
    pool = worker.connection.connection_pool
    connection = pool.get_connection()
    connection.send_command("INFO")
    pool.release(connection)

    worker.teardown()

    assert Worker.all(connection=get_redis()) == []
