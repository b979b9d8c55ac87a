"""Every change a user may see becomes an Event row (the audit trail and replay source) and,
once its transaction commits, a flask-sse style message on each of its topics."""

import json
import logging

from flask import current_app
from sqlalchemy import event as sa_event
from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.extensions import db, get_redis
from app.models import Event, EventTopic, utcnow

log = logging.getLogger(__name__)

_PENDING = "submissions_outgoing_events"
_NUMBERED = "submissions_numbered_events"


def emit(type, payload, topics, submission_id=None):
    """Add an event to the current transaction; it is published only if that commits."""
    db.session.info.setdefault(_PENDING, []).append(
        (type, payload, list(dict.fromkeys(topics)), submission_id))


def wire_message(event_id, type, payload):
    """The message body flask-sse publishes (and its stream parses): data, type, id."""
    return json.dumps({"data": payload, "type": type, "id": event_id})


def publish(event_id, type, payload, topics):
    publish_all([(event_id, type, payload, topics)])


def publish_all(events):
    """Publish (id, type, payload, topics) events on their topics, in one round trip."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        for event_id, type, payload, topics in events:
            message = wire_message(event_id, type, payload)
            for topic in topics:
                pipe.publish(topic, message)
        pipe.execute()
    except Exception as exc:  # the event is in the database; a reconnecting stream replays it
        log.warning("event=publish_failed event_ids=%s error=%r",
                    ",".join(str(event[0]) for event in events), exc)


@sa_event.listens_for(Session, "before_commit")
def _insert_pending(session):
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.flush()  # the rows the events name exist first
    # One INSERT for the events of this transaction, one for their topics; ids in order.
    connection = session.connection()
    ids = connection.execute(
        insert(Event).returning(Event.id, sort_by_parameter_order=True),
        [{"type": type, "payload": payload, "submission_id": submission_id, "created_at": utcnow()}
         for type, payload, _topics, submission_id in pending],
    ).scalars().all()
    connection.execute(insert(EventTopic), [
        {"event_id": event_id, "topic": topic}
        for event_id, (_type, _payload, topics, _sid) in zip(ids, pending, strict=True)
        for topic in topics
    ])
    session.info.setdefault(_NUMBERED, []).extend(
        (event_id, type, payload, topics)
        for event_id, (type, payload, topics, _sid) in zip(ids, pending, strict=True))


@sa_event.listens_for(Session, "after_commit")
def _publish_committed(session):
    numbered = session.info.pop(_NUMBERED, None)
    if not numbered or not current_app:
        return
    publish_all(numbered)


@sa_event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session):
    session.info.pop(_PENDING, None)
    session.info.pop(_NUMBERED, None)
