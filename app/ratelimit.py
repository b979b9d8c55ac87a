"""Fixed-window rate limits kept in Redis, shared by every web process."""

import logging
import time

from app.extensions import get_redis

log = logging.getLogger(__name__)


def wait_seconds(name, key, limit, period):
    """Count one attempt; the seconds to wait if it is over `limit` per `period`, else 0."""
    now = time.time()
    window = int(now // period)
    redis_key = f"ratelimit:{name}:{key}:{window}"
    try:
        pipe = get_redis().pipeline()
        pipe.incr(redis_key)
        pipe.expire(redis_key, period + 1)
        count = pipe.execute()[0]
    except Exception as exc:  # Redis away: let people in rather than lock everyone out
        log.warning("event=ratelimit_unavailable name=%s error=%r", name, exc)
        return 0
    if count <= limit:
        return 0
    return max(1, int(period - (now % period)) + 1)
