"""The periodic dashboard roll-up: intake per minute (the deadline curve), queue backlogs, step
durations and failures, open streams; stored for the page and published on admin.dashboard."""

import json
import logging
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from flask import current_app
from rq import get_current_job
from sqlalchemy import delete, func

from app.events.publisher import emit
from app.events.topics import ADMIN_DASHBOARD
from app.extensions import db, get_redis
from app.models import Event, EventTopic, StepRun, Submission, utcnow
from app.ops import dashboard, metrics, queues
from app.steps import STEPS

log = logging.getLogger(__name__)

# An upload is stamped when it arrives and committed a moment later: recount this far back.
LATE_COMMIT_SLACK = timedelta(minutes=1)


def _minute(at):
    return at.replace(second=0, microsecond=0)


def _intake_per_minute(redis, now):
    """Count only uploads received since the last roll-up (received_at is indexed)."""
    window_start = _minute(now) - timedelta(minutes=dashboard.WINDOW_MINUTES - 1)
    counted_at = redis.get(dashboard.COUNTED_AT_KEY)
    since = window_start
    if counted_at is not None:
        last = datetime.fromtimestamp(float(counted_at), UTC)
        since = max(window_start, _minute(last - LATE_COMMIT_SLACK))
    received = db.session.execute(
        db.select(Submission.received_at).where(Submission.received_at >= since)
    ).scalars()
    counts = Counter(_minute(at) for at in received)
    fresh = {}
    minute = since
    while minute <= now:
        fresh[minute.isoformat()] = counts.get(minute, 0)
        minute += timedelta(minutes=1)
    stored = {key.decode(): int(value)
              for key, value in redis.hgetall(dashboard.INTAKE_KEY).items()}
    stale = [key for key in stored if datetime.fromisoformat(key) < window_start]
    pipe = redis.pipeline()
    pipe.hset(dashboard.INTAKE_KEY, mapping=fresh)
    if stale:
        pipe.hdel(dashboard.INTAKE_KEY, *stale)
    pipe.set(dashboard.COUNTED_AT_KEY, now.timestamp())
    pipe.execute()
    stored.update(fresh)
    return [
        {"minute": (window_start + timedelta(minutes=n)).isoformat(),
         "count": stored.get((window_start + timedelta(minutes=n)).isoformat(), 0)}
        for n in range(dashboard.WINDOW_MINUTES)
    ]


def _mean(total, count):
    return round(total / count, 3) if count else None


def _steps(redis):
    """Per step: mean duration overall and since the last roll-up, recent and standing failures."""
    durations = metrics.step_durations(redis)
    outcomes = metrics.step_outcomes(redis)
    raw_previous = redis.get(dashboard.PREVIOUS_KEY)
    previous = json.loads(raw_previous) if raw_previous else {"durations": {}, "failures": {}}
    failed_now = dict(db.session.execute(
        db.select(StepRun.name, func.count()).where(StepRun.status == "failed")
        .group_by(StepRun.name)
    ).all())
    rows, snapshot = [], {"durations": {}, "failures": {}}
    for step in STEPS:
        count, total = durations[step.name]["count"], durations[step.name]["sum"]
        failures = outcomes[(step.name, "retrying")] + outcomes[(step.name, "failed")]
        before_count, before_total = previous["durations"].get(step.name, (count, total))
        if count < before_count:  # counters were reset (Redis flushed): start afresh
            before_count, before_total = 0, 0.0
        snapshot["durations"][step.name] = (count, total)
        snapshot["failures"][step.name] = failures
        rows.append({
            "name": step.name,
            "title": step.title,
            "attempts": count,
            "mean_seconds": _mean(total, count),
            "recent_attempts": count - before_count,
            "recent_mean_seconds": _mean(total - before_total, count - before_count),
            "recent_failures": max(0, failures - previous["failures"].get(step.name, failures)),
            "failed_now": failed_now.get(step.name, 0),
        })
    redis.set(dashboard.PREVIOUS_KEY, json.dumps(snapshot))
    return rows


def _prune_published_stats(kept):
    """Drop all but the newest `kept` roll-ups from the event trail: a dashboard that reconnects
    needs only the latest, and one every few seconds would otherwise grow without end."""
    on_dashboard = db.select(EventTopic.event_id).where(EventTopic.topic == ADMIN_DASHBOARD)
    oldest_kept = db.session.execute(
        on_dashboard.order_by(EventTopic.event_id.desc()).offset(kept - 1).limit(1)
    ).scalar()
    if oldest_kept is None:
        return
    stale = list(db.session.scalars(on_dashboard.where(EventTopic.event_id < oldest_kept)))
    if stale:
        db.session.execute(delete(EventTopic).where(EventTopic.event_id.in_(stale)))
        db.session.execute(delete(Event).where(Event.id.in_(stale), Event.type == "stats"))
        db.session.commit()


def roll_up():
    job = get_current_job()
    redis = get_redis()
    now = utcnow()
    intake = _intake_per_minute(redis, now)
    states = queues.queue_states(redis)
    steps = _steps(redis)
    needs_attention = db.session.execute(
        db.select(func.count()).select_from(Submission)
        .where(Submission.status == "needs_attention")
    ).scalar_one()
    stats = {
        "at": now.isoformat(),
        "intake": intake,
        "intake_last_minute": intake[-1]["count"],
        "intake_last_hour": sum(point["count"] for point in intake),
        "queues": [asdict(state) for state in states],
        "backlog": sum(state.depth for state in states),
        "workers": queues.worker_count(redis),
        "steps": steps,
        "failed_steps": sum(step["failed_now"] for step in steps),
        "needs_attention": needs_attention,
        "open_streams": metrics.open_streams_all_processes(),
    }
    redis.set(dashboard.STATS_KEY, json.dumps(stats))
    emit("stats", stats, [ADMIN_DASHBOARD])
    db.session.commit()
    _prune_published_stats(current_app.config["DASHBOARD_EVENTS_KEPT"])
    log.debug(  # every few seconds; the dashboard shows the figures
        "event=rollup job_id=%s intake_last_minute=%s backlog=%s failed_steps=%s "
        "open_streams=%s", job.id if job else None, stats["intake_last_minute"],
        stats["backlog"], stats["failed_steps"], stats["open_streams"],
    )
    return {"backlog": stats["backlog"], "failed_steps": stats["failed_steps"]}
