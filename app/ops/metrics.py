"""Counters shared by every process (web, workers) in Redis, and their Prometheus text form."""

import logging
import math
from bisect import bisect_left

from app.events.hub import open_streams_all_processes
from app.extensions import get_redis
from app.models import utcnow
from app.ops import queues
from app.steps import STEPS

log = logging.getLogger(__name__)

STEP_OUTCOMES_KEY = "metrics:step_outcomes"
STEP_DURATIONS_KEY = "metrics:step_durations"
INTAKE_KEY = "metrics:intake"

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


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    return str(value) if isinstance(value, int) else repr(float(value))


def _family(lines, name, kind, help_text, samples):
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for suffix, labels, value in samples:
        label_text = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
        sample = f"{name}{suffix}{{{label_text}}}" if label_text else f"{name}{suffix}"
        lines.append(f"{sample} {_number(value)}")


def exposition():
    """Every metric in the Prometheus text format (version 0.0.4)."""
    redis = get_redis()
    states = queues.queue_states(redis)
    lines = []
    _family(lines, "submissions_queue_depth", "gauge", "Jobs waiting in each queue.",
            [("", {"queue": s.name}, s.depth) for s in states])
    _family(lines, "submissions_queue_oldest_job_age_seconds", "gauge",
            "Age of the oldest job waiting in each queue (0 when empty).",
            [("", {"queue": s.name}, s.oldest_age or 0) for s in states])
    _family(lines, "submissions_queue_running_jobs", "gauge", "Jobs being worked on per queue.",
            [("", {"queue": s.name}, s.started) for s in states])
    _family(lines, "submissions_queue_failed_jobs", "gauge",
            "Jobs that exhausted their retries and wait for staff, per queue.",
            [("", {"queue": s.name}, s.failed) for s in states])
    _family(lines, "submissions_workers", "gauge", "RQ workers alive.",
            [("", {}, queues.worker_count(redis))])

    samples = []
    for step, data in step_durations(redis).items():
        cumulative = 0
        for label, count in data["buckets"].items():
            cumulative += count
            samples.append(("_bucket", {"step": step, "le": label}, cumulative))
        samples.append(("_sum", {"step": step}, data["sum"]))
        samples.append(("_count", {"step": step}, data["count"]))
    _family(lines, "submissions_step_duration_seconds", "histogram",
            "How long one attempt of a pipeline step ran.", samples)
    _family(lines, "submissions_step_outcomes_total", "counter",
            "Attempts of each pipeline step by how they ended.",
            [("", {"step": step, "outcome": outcome}, count)
             for (step, outcome), count in step_outcomes(redis).items()])
    _family(lines, "submissions_open_event_streams", "gauge",
            "Server-Sent Event streams open, over all web processes.",
            [("", {}, open_streams_all_processes())])
    _family(lines, "submissions_intake_total", "counter",
            "Uploads accepted, and refused by error code.",
            [("", {"outcome": outcome}, count)
             for outcome, count in sorted(intake_counts(redis).items())])
    return "\n".join(lines) + "\n"
