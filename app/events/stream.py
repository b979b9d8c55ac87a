"""GET /events: one Server-Sent Events stream for several topics, authorized before it starts,
resumed after Last-Event-ID, kept alive by heartbeats, and fed by this process's hub."""

import logging
import socket
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from queue import Empty

from flask import Response, request
from flask_login import current_user
from sqlalchemy import select

from app.errors import error_response
from app.events import bp
from app.events.access import Viewer, may_follow
from app.events.hub import current_hub
from app.events.topics import UnknownTopic, parse_topic, user_topic
from app.extensions import db
from app.models import Event, utcnow

log = logging.getLogger(__name__)

MAX_TOPICS = 20
RECONNECT_MS = 3000
# How far a page's starting cursor lags behind the newest event: an event whose transaction
# was still open while the page read the database is then replayed, never lost.
CURSOR_LAG = timedelta(seconds=5)
SENT_IDS_KEPT = 4096


@bp.get("/events")
def stream():
    if not current_user.is_authenticated:
        return error_response(401, "unauthorized", "Log in or send a bearer token.")
    topics = list(dict.fromkeys(request.args.getlist("topic")))
    if not topics or len(topics) > MAX_TOPICS:
        example = user_topic(current_user.id)
        return error_response(400, "bad_topics",
                              f"Name 1 to {MAX_TOPICS} topics, e.g. ?topic={example}")
    try:
        for topic in topics:
            parse_topic(topic)
    except UnknownTopic as exc:
        return error_response(400, "unknown_topic", f"There is no topic called {exc}.")
    refused = [topic for topic in topics if not may_follow(current_user, topic)]
    if refused:
        return error_response(403, "forbidden", f"You may not follow {', '.join(refused)}.")

    viewer = Viewer.of(current_user)
    last_event_id = _last_event_id()
    hub = current_hub()
    subscription = hub.subscribe(topics, viewer)
    # An idle stream holds no database connection; replay borrows one briefly.
    db.session.remove()
    stream_id = uuid.uuid4().hex[:12]
    log.info("event=stream_opened stream_id=%s user_id=%s topics=%s last_event_id=%s",
             stream_id, viewer.user_id, ",".join(sorted(topics)), last_event_id)
    peer = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    response = Response(_stream_body(hub, subscription, last_event_id, peer),
                        mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(lambda: _closed(hub, subscription, stream_id))
    return response


def _last_event_id():
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _stream_body(hub, subscription, last_event_id, peer):
    # Sent at once, so the headers leave now rather than with the first event.
    yield f"retry: {RECONNECT_MS}\n: stream open\n\n"
    sent = _SentIds()
    if last_event_id is not None:
        for delivery in hub.replay(subscription.topics, last_event_id, subscription.replay_upto):
            sent.add(delivery.id)
            yield hub.frame(subscription, delivery)
    last_write = time.monotonic()
    while not subscription.closed:
        wait = hub.heartbeat_seconds - (time.monotonic() - last_write)
        try:
            delivery = subscription.queue.get(timeout=max(wait, 0))
        except Empty:
            if _peer_closed(peer):
                return
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
            continue
        if delivery is None:
            return
        if delivery.id is not None:
            already_had = last_event_id is not None and delivery.id <= last_event_id
            if delivery.id in sent or (already_had and not delivery.late):
                continue
            sent.add(delivery.id)
        yield hub.frame(subscription, delivery)
        last_write = time.monotonic()


def _peer_closed(sock):
    # A browser that has gone sent FIN; peeking sees it now instead of after a failed write.
    # The peek goes to the OS socket without waiting (gevent's would wait for data), and
    # unlike select() it works for any descriptor number, however many streams are open.
    if sock is None:
        return False
    raw = getattr(sock, "_sock", sock)
    try:
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _closed(hub, subscription, stream_id):
    hub.unsubscribe(subscription)
    log.info("event=stream_closed stream_id=%s user_id=%s topics=%s duration_s=%.1f sent=%s",
             stream_id, subscription.viewer.user_id, ",".join(sorted(subscription.topics)),
             time.monotonic() - subscription.opened_at, subscription.sent)


class _SentIds:
    """The ids this stream sent lately; enough to drop an event that arrives a second time."""

    def __init__(self):
        self._ids = OrderedDict()

    def add(self, event_id):
        self._ids[event_id] = True
        if len(self._ids) > SENT_IDS_KEPT:
            self._ids.popitem(last=False)

    def __contains__(self, event_id):
        return event_id in self._ids


@bp.app_template_global()
def event_cursor():
    """Where a page's stream starts: the newest event a little older than the page."""
    return db.session.scalar(
        select(Event.id).where(Event.created_at <= utcnow() - CURSOR_LAG)
        .order_by(Event.id.desc()).limit(1)
    ) or 0
