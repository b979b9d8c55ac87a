"""One Redis pub/sub subscription per web process, fanned out to that process's event streams.

The hub hands events to streams in id order (app/events/ordering.py), waiting at most
SSE_GAP_WAIT_SECONDS for a missing id before looking it up in the database. A stream that has
sent id N has therefore sent everything up to N on its topics, and a reconnect that replays
"after N" from the database misses nothing. (A hub that has just started cannot tell ids
rolled back before it started from uncommitted ones, so its first event may wait that long.)
"""

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from queue import Full, Queue

from flask import current_app
from flask_sse import Message
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.events.access import may_follow, shaped_for
from app.events.ordering import EventOrder
from app.events.topics import TOPIC_PATTERNS
from app.extensions import db
from app.models import Assignment, Event, EventTopic, FlashMessage, Submission, User
from app.ops import metrics

log = logging.getLogger(__name__)

STREAM_QUEUE_LIMIT = 1000
BATCH = 200
COURSE_CACHE_LIMIT = 10_000
_EXTENSION = "submissions_event_hub"
_starting = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    id: int | None
    type: str | None
    data: object
    late: bool = False


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    data: dict
    topics: list


class Subscription:
    """One open stream: its topics, its viewer, and the queue the hub fills for it."""

    def __init__(self, topics, viewer):
        self.topics = frozenset(topics)
        self.viewer = viewer
        self.queue = Queue(maxsize=STREAM_QUEUE_LIMIT)
        self.closed = False
        self.replay_upto = 0
        self.opened_at = time.monotonic()
        self.sent = 0

    def offer(self, delivery):
        try:
            self.queue.put_nowait(delivery)
        except Full:
            # A stream this far behind ends; its browser reconnects and replays from the database.
            self.closed = True

    def close(self):
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except Full:
            pass


class Hub:
    def __init__(self, app):
        self.app = app
        self.pid = os.getpid()
        self.process = f"{socket.gethostname()}:{self.pid}"
        self.heartbeat_seconds = app.config["SSE_HEARTBEAT_SECONDS"]
        self.gap_wait_seconds = app.config["SSE_GAP_WAIT_SECONDS"]
        # Its own client: one pub/sub connection plus one for metrics, whatever the stream count.
        self.redis = Redis.from_url(
            app.config["REDIS_URL"], client_name=f"sse-hub:{self.process}",
            socket_connect_timeout=2, socket_timeout=10, health_check_interval=15,
        )
        self._lock = threading.Lock()
        self._followers = {}
        self._streams = set()
        self._order = EventOrder(0, self.gap_wait_seconds)
        self._courses = {}
        self._stopping = threading.Event()
        self._thread = None

    @property
    def open_streams(self):
        return len(self._streams)

    def start(self):
        self._order = EventOrder(newest_event_id(), self.gap_wait_seconds)
        self._thread = threading.Thread(target=self._run, name="sse-hub", daemon=True)
        self._thread.start()
        log.info("event=hub_started process=%s released=%s", self.process, self._order.released)

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            streams = list(self._streams)
        for subscription in streams:
            subscription.close()
        try:
            metrics.forget_open_streams(self.redis, self.process)
        finally:
            self.redis.close()

    def subscribe(self, topics, viewer):
        subscription = Subscription(topics, viewer)
        with self._lock:
            subscription.replay_upto = self._order.released
            for topic in subscription.topics:
                self._followers.setdefault(topic, set()).add(subscription)
            self._streams.add(subscription)
        return subscription

    def unsubscribe(self, subscription):
        with self._lock:
            self._streams.discard(subscription)
            self._unfollow(subscription, subscription.topics)

    def _unfollow(self, subscription, topics):
        for topic in topics:
            followers = self._followers.get(topic)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._followers[topic]

    def replay(self, topics, after, upto):
        """Stored events on these topics with after < id <= upto, oldest first, less flash
        messages already acknowledged (on another page or tab): those were not missed."""
        while after < upto:
            with self.app.app_context():
                batch = stored_events(after, upto=upto, topics=topics, limit=BATCH)
                acknowledged = acknowledged_flashes(batch)
            for event in batch:
                if event.type != "flash" or event.data.get("id") not in acknowledged:
                    yield Delivery(event.id, event.type, event.data)
            if len(batch) < BATCH:
                return
            after = batch[-1].id

    def frame(self, subscription, delivery):
        """The event as this stream's viewer may see it, in flask-sse's wire format."""
        data = shaped_for(subscription.viewer, delivery.type, delivery.data,
                          self.course_of_submission)
        subscription.sent += 1
        return str(Message(data, type=delivery.type, id=delivery.id))

    def course_of_submission(self, submission_id):
        if submission_id not in self._courses:
            if len(self._courses) > COURSE_CACHE_LIMIT:
                self._courses.clear()
            with self.app.app_context():
                self._courses[submission_id] = db.session.scalar(
                    select(Assignment.course_id)
                    .join(Submission, Submission.assignment_id == Assignment.id)
                    .where(Submission.id == submission_id)
                )
        return self._courses[submission_id]

    def _run(self):
        delay = 0.5
        while not self._stopping.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(*TOPIC_PATTERNS)
                self._catch_up()
                delay = 0.5
                self._listen(pubsub)
            except Exception as exc:  # Redis or the database away: wait, resubscribe, catch up
                log.warning("event=hub_interrupted process=%s error=%r", self.process, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10)
            finally:
                pubsub.close()

    def _listen(self, pubsub):
        tick = min(0.25, self.gap_wait_seconds / 4)
        reported, report_due = None, 0.0
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=tick)
            if message is not None and message["type"] == "pmessage":
                self._receive(message["channel"].decode(), message["data"])
            self._resolve_gap()
            now = time.monotonic()
            if self.open_streams != reported or now >= report_due:
                reported = self.open_streams
                metrics.report_open_streams(self.redis, self.process, reported)
                report_due = now + self.heartbeat_seconds

    def _catch_up(self):
        """Deliver what was committed while this hub was not subscribed (start-up, Redis away)."""
        with self._lock:
            after = self._order.released
        while True:
            with self.app.app_context():
                batch = stored_events(after, limit=BATCH)
            for event in batch:
                self._arrived(event.id, event.type, event.data, event.topics)
            if len(batch) < BATCH:
                return
            after = batch[-1].id

    def _receive(self, topic, raw):
        try:
            message = json.loads(raw)
            event_id, type, data = message.get("id"), message.get("type"), message["data"]
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("event=hub_unreadable_message topic=%s", topic)
            return
        self._arrived(event_id if isinstance(event_id, int) else None, type, data, [topic])

    def _arrived(self, event_id, type, data, topics):
        with self._lock:
            self._hand_on(self._order.arrived(event_id, (type, data), topics))

    def _hand_on(self, releases):
        for release in releases:
            type, data = release.event
            if type == "enrolment" and isinstance(data, dict):
                # Before anything later reaches them: a user's streams keep only the topics
                # they may still follow.
                self._recheck(data.get("user_id"))
            delivery = Delivery(release.id, type, data, late=release.late)
            for topic in release.topics:
                for subscription in self._followers.get(topic, ()):
                    subscription.offer(delivery)

    def _recheck(self, user_id):
        """A user's enrolments changed (app/inbound.py): their open streams stop here, before
        any later event, on the topics they may no longer follow; one left with none ends."""
        streams = [s for s in self._streams if s.viewer.user_id == user_id]
        if not streams:
            return
        try:
            with self.app.app_context():
                user = db.session.get(User, user_id)
                lost = {s: {t for t in s.topics if user is None or not may_follow(user, t)}
                        for s in streams}
        except Exception as exc:  # database away: end them; a reconnect is authorized afresh
            log.warning("event=hub_recheck_failed user_id=%s error=%r", user_id, exc)
            lost = {s: set(s.topics) for s in streams}
        for subscription, topics in lost.items():
            self._unfollow(subscription, topics)
            subscription.topics = subscription.topics - topics
            if topics and not subscription.topics:
                subscription.close()

    def _resolve_gap(self):
        with self._lock:
            gap = self._order.overdue_gap()
        if gap is None:
            return
        after, upto = gap
        try:
            with self.app.app_context():
                found = stored_events(after, upto=upto)
        except Exception as exc:  # database away: give the gap up rather than stall every stream
            log.warning("event=hub_gap_lookup_failed after=%s error=%r", after, exc)
            found = []
        with self._lock:
            releases, given_up = self._order.close_gap(
                upto, [(event.id, (event.type, event.data), event.topics) for event in found])
            self._hand_on(releases)
        if given_up:
            log.info("event=hub_gap_given_up ids=%s..%s count=%s",
                     given_up[0], given_up[-1], len(given_up))


def newest_event_id():
    return db.session.scalar(select(func.max(Event.id))) or 0


def stored_events(after, upto=None, topics=None, limit=None):
    query = (select(Event).options(selectinload(Event.topics))
             .where(Event.id > after).order_by(Event.id))
    if upto is not None:
        query = query.where(Event.id <= upto)
    if topics:
        query = query.where(Event.id.in_(
            select(EventTopic.event_id).where(EventTopic.topic.in_(topics))))
    if limit:
        query = query.limit(limit)
    return [StoredEvent(event.id, event.type, event.payload, event.topic_names)
            for event in db.session.execute(query).scalars()]


def acknowledged_flashes(events):
    ids = [event.data.get("id") for event in events if event.type == "flash"]
    if not ids:
        return set()
    return set(db.session.scalars(
        select(FlashMessage.id).where(FlashMessage.id.in_(ids), FlashMessage.acked_at.is_not(None))
    ))


def current_hub():
    """This process's hub, started by the first stream (never at import or in create_app)."""
    app = current_app._get_current_object()
    hub = app.extensions.get(_EXTENSION)
    if hub is not None and hub.pid == os.getpid():
        return hub
    with _starting:
        hub = app.extensions.get(_EXTENSION)
        if hub is None or hub.pid != os.getpid():
            hub = Hub(app)
            hub.start()
            app.extensions[_EXTENSION] = hub
    return hub


def stop_hub():
    hub = current_app.extensions.pop(_EXTENSION, None)
    if hub is not None and hub.pid == os.getpid():
        hub.stop()


def open_stream_count():
    """Event streams open in this process."""
    hub = current_app.extensions.get(_EXTENSION)
    return hub.open_streams if hub is not None and hub.pid == os.getpid() else 0
