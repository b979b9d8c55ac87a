"""Calling an outside service politely: a circuit breaker whose state lives in Redis, so every
worker stops calling a service that is down, the service's own Retry-After, and the answers
that say the request itself is wrong, so repeating it cannot help."""

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus

# While one trial call tests a recovering service, other callers wait this long before asking.
TRIAL_WAIT = 10
# Never wait longer than this on a service's say-so, whatever its Retry-After.
MAX_RETRY_AFTER = 3600


# The service understood us and refused: the request is malformed, our credentials are not
# accepted, or the content is not acceptable. The same request would get the same answer.
REFUSED_FOR_GOOD = frozenset({400, 401, 403, 413, 415, 422})


def refused_for_good(status):
    return status in REFUSED_FOR_GOOD


def answer_message(response):
    """The message a JSON error answer carries, else the start of its body."""
    try:
        message = response.json().get("message", "")
    except (ValueError, AttributeError):
        message = response.text
    return " ".join(str(message).split())[:200]


def refusal(service, response):
    """A refusal as staff read it: "Turnitin refused the request (401 Unauthorized: …)"."""
    try:
        answer = f"{response.status_code} {HTTPStatus(response.status_code).phrase}"
    except ValueError:
        answer = str(response.status_code)
    message = answer_message(response)
    return f"{service} refused the request ({answer}{': ' + message if message else ''})"


class CircuitOpen(Exception):
    def __init__(self, service, retry_in):
        super().__init__(f"{service} is unavailable; calls are paused for {retry_in} s")
        self.service = service
        self.retry_in = retry_in


class CircuitBreaker:
    """Closed, calls go through. After `threshold` failures in a row (none more than `window`
    seconds apart) it opens: for `cooldown` seconds every call is refused without trying. Then
    it is half-open: one trial call at a time goes through; success closes the circuit, failure
    opens it again. Failures are 5xx answers, timeouts and refused connections."""

    def __init__(self, redis, service, threshold=5, cooldown=60, window=300, trial_timeout=120):
        self.redis = redis
        self.service = service
        self.threshold = threshold
        self.cooldown = cooldown
        self.window = window
        self.trial_timeout = trial_timeout
        self.failures_key = f"circuit:{service}:failures"
        self.open_key = f"circuit:{service}:open"
        self.trial_key = f"circuit:{service}:trial"

    def _failures(self):
        return int(self.redis.get(self.failures_key) or 0)

    @property
    def state(self):
        if self.redis.exists(self.open_key):
            return "open"
        if self._failures() >= self.threshold:
            return "half-open"
        return "closed"

    def before_call(self):
        """Raise CircuitOpen instead of letting a call reach a service that is down."""
        remaining_ms = self.redis.pttl(self.open_key)
        if remaining_ms > 0:
            raise CircuitOpen(self.service, math.ceil(remaining_ms / 1000))
        if self._failures() < self.threshold:
            return
        if not self.redis.set(self.trial_key, "1", nx=True, ex=self.trial_timeout):
            raise CircuitOpen(self.service, min(self.cooldown, TRIAL_WAIT))

    def record_success(self):
        self.redis.delete(self.failures_key, self.trial_key)

    def record_failure(self):
        pipe = self.redis.pipeline()
        pipe.incr(self.failures_key)
        # Outlives the cooldown, so the circuit is half-open (not closed) when it ends.
        pipe.expire(self.failures_key, self.window + self.cooldown)
        failures = pipe.execute()[0]
        if failures >= self.threshold:
            pipe = self.redis.pipeline()
            pipe.set(self.open_key, "1", ex=self.cooldown)
            pipe.delete(self.trial_key)
            pipe.execute()
        return failures


def retry_after_seconds(value, default):
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = math.ceil((when - datetime.now(UTC)).total_seconds())
    return min(max(seconds, 1), MAX_RETRY_AFTER)
