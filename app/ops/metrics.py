"""Counters shared by every process (web, workers) in Redis, and their Prometheus text form."""

import logging
import math
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from app.extensions import get_redis
from app.models import utcnow
from app.ops import queues
from app.steps import STEPS

log = logging.getLogger(__name__)

STEP_OUTCOMES_KEY = "metrics:step_outcomes"
STEP_DURATIONS_KEY = "metrics:step_durations"
INTAKE_KEY = "metrics:intake"
# Each web process's count of open event streams, and when it last reported it.
OPEN_STREAMS_KEY = "metrics:open_streams"
OPEN_STREAMS_SEEN_KEY = "metrics:open_streams:seen"
# A process that has not reported for this long is gone (its hub reports every heartbeat).
OPEN_STREAMS_STALE_SECONDS = 60

OUTCOMES = ("succeeded", "skipped", "retrying", "failed", "rejected")
# Upper bounds in seconds: a virus scan takes a fraction of a second, a plagiarism check minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, math.inf)


def _bucket_label(bound):
    return "+Inf" if bound == math.inf else f"{bound:g}"


def count_step(step_run, outcome=None):
    """One attempt of a step ended; outcome defaults to the status it ended in."""
    outcome = outcome or step_run.status
    seconds = None
    if step_run.started_at is not None:
        seconds = max(0.0, ((step_run.finished_at or utcnow()) - step_run.started_at)
                      .total_seconds())
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(STEP_OUTCOMES_KEY, f"{step_run.name}|{outcome}", 1)
        if seconds is not None:
            bound = DURATION_BUCKETS[bisect_left(DURATION_BUCKETS, seconds)]
            pipe.hincrby(STEP_DURATIONS_KEY, f"{step_run.name}|le={_bucket_label(bound)}", 1)
            pipe.hincrbyfloat(STEP_DURATIONS_KEY, f"{step_run.name}|sum", seconds)
            pipe.hincrby(STEP_DURATIONS_KEY, f"{step_run.name}|count", 1)
        pipe.execute()
    except Exception as exc:  # a lost sample must never fail the step it describes
        log.warning("event=metrics_failed submission_id=%s step=%s job_id=%s error=%r",
                    step_run.submission_id, step_run.name, step_run.job_id, exc)


def count_intake(outcome):
    """An upload was accepted ("accepted") or refused (the refusal's error code)."""
    try:
        get_redis().hincrby(INTAKE_KEY, outcome, 1)
    except Exception as exc:  # the student's answer matters more than the counter
        log.warning("event=metrics_failed intake_outcome=%s error=%r", outcome, exc)


def report_open_streams(redis, process, count):
    """This web process (host:pid) has `count` event streams open."""
    pipe = redis.pipeline(transaction=False)
    pipe.hset(OPEN_STREAMS_KEY, process, count)
    pipe.hset(OPEN_STREAMS_SEEN_KEY, process, time.time())
    pipe.execute()


def forget_open_streams(redis, process):
    redis.hdel(OPEN_STREAMS_KEY, process)
    redis.hdel(OPEN_STREAMS_SEEN_KEY, process)


def open_streams_all_processes():
    """Event streams open across every web process that reported recently."""
    redis = get_redis()
    counts = redis.hgetall(OPEN_STREAMS_KEY)
    seen = redis.hgetall(OPEN_STREAMS_SEEN_KEY)
    fresh_since = time.time() - OPEN_STREAMS_STALE_SECONDS
    total, gone = 0, []
    for process, count in counts.items():
        if float(seen.get(process, 0)) >= fresh_since:
            total += int(count)
        else:
            gone.append(process)
    if gone:
        redis.hdel(OPEN_STREAMS_KEY, *gone)
        redis.hdel(OPEN_STREAMS_SEEN_KEY, *gone)
    return total


def _decoded(mapping):
    return {key.decode(): value.decode() for key, value in mapping.items()}


def step_durations(redis):
    """{step: {"count": n, "sum": seconds, "buckets": {label: n}}} for every pipeline step."""
    raw = _decoded(redis.hgetall(STEP_DURATIONS_KEY))
    result = {}
    for step in STEPS:
        buckets = {_bucket_label(b): int(raw.get(f"{step.name}|le={_bucket_label(b)}", 0))
                   for b in DURATION_BUCKETS}
        result[step.name] = {
            "count": int(raw.get(f"{step.name}|count", 0)),
            "sum": float(raw.get(f"{step.name}|sum", 0)),
            "buckets": buckets,
        }
    return result


def step_outcomes(redis):
    raw = _decoded(redis.hgetall(STEP_OUTCOMES_KEY))
    counts = {(step.name, outcome): 0 for step in STEPS
              for outcome in OUTCOMES}
    for field, value in raw.items():
        step, _, outcome = field.partition("|")
        counts[(step, outcome)] = int(value)
    return counts


def intake_counts(redis):
    counts = {"accepted": 0}
    counts.update({key: int(value) for key, value in _decoded(redis.hgetall(INTAKE_KEY)).items()})
    return counts


class RedisCollector:
    """The service's metrics for prometheus_client, read from Redis at each scrape: Redis is
    where every web and worker process, on every machine, adds its counts."""

    def collect(self):
        redis = get_redis()
        states = queues.queue_states(redis)
        yield _by_queue("submissions_queue_depth", "Jobs waiting in each queue.",
                        states, lambda s: s.depth)
        yield _by_queue("submissions_queue_oldest_job_age_seconds",
                        "Age of the oldest job waiting in each queue (0 when empty).",
                        states, lambda s: s.oldest_age or 0)
        yield _by_queue("submissions_queue_running_jobs", "Jobs being worked on per queue.",
                        states, lambda s: s.started)
        yield _by_queue("submissions_queue_failed_jobs",
                        "Jobs that exhausted their retries and wait for staff, per queue.",
                        states, lambda s: s.failed)
        yield GaugeMetricFamily("submissions_workers", "RQ workers alive.",
                                value=queues.worker_count(redis))

        durations = HistogramMetricFamily("submissions_step_duration_seconds",
                                          "How long one attempt of a pipeline step ran.",
                                          labels=["step"])
        for step, data in step_durations(redis).items():
            cumulative, buckets = 0, []
            for label, count in data["buckets"].items():
                cumulative += count
                buckets.append((label, cumulative))
            durations.add_metric([step], buckets, sum_value=data["sum"])
        yield durations

        outcomes = CounterMetricFamily("submissions_step_outcomes",
                                       "Attempts of each pipeline step by how they ended.",
                                       labels=["step", "outcome"])
        for (step, outcome), count in step_outcomes(redis).items():
            outcomes.add_metric([step, outcome], count)
        yield outcomes

        yield GaugeMetricFamily("submissions_open_event_streams",
                                "Server-Sent Event streams open, over all web processes.",
                                value=open_streams_all_processes())

        intake = CounterMetricFamily("submissions_intake",
                                     "Uploads accepted, and refused by error code.",
                                     labels=["outcome"])
        for outcome, count in sorted(intake_counts(redis).items()):
            intake.add_metric([outcome], count)
        yield intake


def _by_queue(name, help_text, states, value):
    family = GaugeMetricFamily(name, help_text, labels=["queue"])
    for state in states:
        family.add_metric([state.name], value(state))
    return family


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(RedisCollector())


def exposition():
    """Every metric in the Prometheus text format (version 0.0.4)."""
    return generate_latest(REGISTRY).decode()
