"""An RQ worker inside the app context: `python worker.py [queue ...]` (default: every queue).

SIGTERM (Heroku's stop signal) lets the current job finish, then exits; a second one stops at
once and the reconciler re-queues the interrupted step."""

import logging
import os
import sys

from rq import Worker

from app import create_app
from app.extensions import db, get_redis
from app.pipeline import QUEUES

# Heartbeats this often, so the reconciler can tell a dead worker within a minute.
WORKER_TTL = 30
JOB_MONITORING_INTERVAL = 10


def main(queue_names):
    app = create_app()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    with app.app_context():
        # A forked work horse must not share the parent's database connections.
        os.register_at_fork(after_in_child=lambda: db.engine.dispose(close=False))
        worker = Worker(
            queue_names or QUEUES,
            connection=get_redis(),
            worker_ttl=WORKER_TTL,
            job_monitoring_interval=JOB_MONITORING_INTERVAL,
        )
        worker.work(with_scheduler=True, logging_level="INFO")


if __name__ == "__main__":
    main(sys.argv[1:])
