"""Waiting out a Redis outage in the long-running processes (worker and scheduler): a Redis
restart should cost them a pause, not an exit that takes `make run` down with it."""

import logging
import time

import redis

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
FIRST_DELAY = 1
MAX_DELAY = 10
# How often a wait looks at `stopping`; a stop signal that raises ends the wait at once.
STOP_POLL_SECONDS = 0.2


def wait_for_redis(connection, who, error, stopping=lambda: False):
    """Ping Redis, backing off from 1 s doubling to 10 s, until it answers (True) or
    `stopping()` turns true (False)."""
    delay = FIRST_DELAY
    down_since = time.monotonic()
    while True:
        log.warning("event=redis_unavailable %s error=%r retrying_in=%ss", who, str(error), delay)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if stopping():
                return False
            time.sleep(STOP_POLL_SECONDS)
        try:
            connection.ping()
        except REDIS_DOWN as still_down:
            error = still_down
            delay = min(delay * 2, MAX_DELAY)
        else:
            log.warning("event=redis_available %s down_for=%ds", who,
                        time.monotonic() - down_since)
            return True
