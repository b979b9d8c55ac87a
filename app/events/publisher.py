"""Every change a user may see becomes an Event row (the audit trail and replay source) and,
once its transaction commits, a flask-sse style message on each of its topics."""

import json
import logging

from flask import current_app
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from app.extensions import db, get_redis
from app.models import Event, EventTopic

log = logging.getLogger(__name__)

_PENDING = "submissions_outgoing_events"


def submission_topics(submission):
    return [f"submission.{submission.id}", f"user.{submission.student_id}"]


def emit(type, payload, topics, submission_id=None):
    """Add an event to the current transaction; it is published only if that commits."""
    event = Event(type=type, payload=payload, submission_id=submission_id)
    event.topics = [EventTopic(topic=topic) for topic in dict.fromkeys(topics)]
    db.session.add(event)
    # No flush here: many events in one transaction are inserted together at commit.
    db.session.info.setdefault(_PENDING, []).append(event)
    return event


def wire_message(event_id, type, payload):
    """The message body flask-sse publishes (and its stream parses): data, type, id."""
    return json.dumps({"data": payload, "type": type, "id": event_id})


def publish(event_id, type, payload, topics):
    message = wire_message(event_id, type, payload)
    try:
        pipe = get_redis().pipeline(transaction=False)
        for topic in topics:
            pipe.publish(topic, message)
        pipe.execute()
    except Exception as exc:  # the event is in the database; a reconnecting stream replays it
        log.warning("event=publish_failed event_id=%s error=%r", event_id, exc)


@sa_event.listens_for(Session, "before_commit")
def _number_pending(session):
    pending = session.info.get(_PENDING)
    if not pending:
        return
    session.flush()
    # Ids exist once flushed; keep plain values, since commit expires the objects.
    session.info[_PENDING] = [
        item if isinstance(item, tuple)
        else (item.id, item.type, item.payload, [t.topic for t in item.topics])
        for item in pending
    ]


@sa_event.listens_for(Session, "after_commit")
def _publish_committed(session):
    pending = session.info.pop(_PENDING, None)
    if not pending or not current_app:
        return
    for item in pending:
        publish(*item)


@sa_event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session):
    session.info.pop(_PENDING, None)
