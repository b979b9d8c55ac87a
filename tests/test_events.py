import logging
import os
import time

import pytest
import redis
import requests
from sqlalchemy.orm import Session

from app.config import Config
from app.events import hub as event_hub
from app.events.publisher import emit, publish
from app.extensions import db
from app.models import Event, EventTopic, Submission
from app.ops import metrics
from app.pipeline import create_steps, record_step
from tests.conftest import LIVE_HEARTBEAT, PASSWORD, Auth, process_env
from tests.e2e.live import SocketStream, StreamReader, browser, client_for, follow, open_stream
from tests.e2e.servers import WebServer
from tests.helpers import paused, wait_until
from tests.services import RedisServer

pytestmark = pytest.mark.usefixtures("live_events")

HEARTBEAT = LIVE_HEARTBEAT


@pytest.fixture
def people(world):
    """User ids by name; the views share the test's session, so keep plain ids."""
    return {name: user.id for name, user in world.users.items()}


@pytest.fixture
def submissions(world):
    """One submission each for alice (CS101 essay) and carol (ART200 sketch)."""
    made = {}
    for name, assignment in (("alice", world.essay), ("carol", world.sketch)):
        submission = Submission(
            assignment=assignment, student=world.users[name], filename="work.txt",
            content_type="text/plain", size=5, sha256="0" * 64, status="received",
        )
        create_steps(submission)
        db.session.add(submission)
        made[name] = submission
    db.session.commit()
    return {name: submission.id for name, submission in made.items()}


def status_of(client, *topics, **kwargs):
    response = open_stream(client, *topics, **kwargs)
    status = response.status_code
    if status != 200:
        body = response.get_json()
        assert set(body["error"]) == {"code", "message"}
    response.close()
    return status


def step_event(submission_id, name, status, detail, error=None):
    submission = db.session.get(Submission, submission_id)
    record_step(submission.step(name), status, detail, error=error)
    db.session.commit()
    return newest_event_id()


def newest_event_id():
    return db.session.scalar(db.select(db.func.max(Event.id)))


def wait_until_live(reader, topic):
    """Once an event published now arrives, the hub has subscribed and caught up on the past.

    A new hub cannot tell ids burned before it started (PostgreSQL's sequence outlives the
    emptied table) from uncommitted ones, so the probe may wait out one gap."""
    emit("submission", {"note": "probe"}, [topic])
    db.session.commit()
    frames = reader.events(1, timeout=Config.SSE_GAP_WAIT_SECONDS + 3)
    assert [frame.data for frame in frames] == [{"note": "probe"}]


def unpublished_event(topic, type="submission", payload=None):
    """An event committed to the audit trail whose publish has not happened (yet)."""
    event = Event(type=type, payload=payload or {"note": "quiet"})
    event.topics = [EventTopic(topic=topic)]
    db.session.add(event)
    db.session.commit()
    return event.id, event.type, event.payload


# --- who may follow what ---------------------------------------------------------------------


def test_stream_without_a_login_is_refused(app, people):
    response = browser(app).get(f"/events?topic=user.{people['alice']}")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_student_follows_own_topics_and_not_another_students(app, people, submissions, world):
    essay, sketch = world.essay.id, world.sketch.id
    alice = client_for(app, "alice")
    assert status_of(alice, f"user.{people['alice']}") == 200
    assert status_of(alice, f"submission.{submissions['alice']}") == 200
    assert status_of(alice, f"assignment.{essay}") == 200
    assert status_of(alice, f"user.{people['bob']}") == 403
    assert status_of(alice, f"submission.{submissions['carol']}") == 403
    assert status_of(alice, f"assignment.{sketch}") == 403
    assert status_of(alice, f"assignment.{essay}.staff") == 403
    assert status_of(alice, "admin.dashboard") == 403
    # Another student on the same course sees nothing of alice's work either.
    assert status_of(client_for(app, "bob"), f"submission.{submissions['alice']}") == 403


def test_course_staff_follow_their_course_and_admins_follow_anything(
        app, people, submissions, world):
    essay = world.essay.id
    sam, tess, root = (client_for(app, name) for name in ("sam", "tess", "root"))
    assert status_of(sam, f"submission.{submissions['alice']}") == 200
    assert status_of(sam, f"assignment.{essay}", f"assignment.{essay}.staff") == 200
    assert status_of(sam, f"user.{people['alice']}") == 403
    assert status_of(tess, f"submission.{submissions['alice']}") == 403
    assert status_of(tess, f"assignment.{essay}.staff") == 403
    assert status_of(root, f"user.{people['alice']}", f"submission.{submissions['carol']}",
                     f"assignment.{essay}.staff", "admin.dashboard") == 200


def test_one_refused_topic_refuses_the_stream_before_it_starts(app, people):
    response = open_stream(client_for(app, "alice"), f"user.{people['alice']}",
                           f"user.{people['bob']}")
    assert response.status_code == 403
    assert response.mimetype == "application/json"
    assert f"user.{people['bob']}" in response.get_json()["error"]["message"]


def test_submission_that_does_not_exist_is_refused_like_someone_elses(app, people):
    assert status_of(client_for(app, "alice"), "submission.987654321") == 403


@pytest.mark.parametrize("topic", ["courses.1", "course.1.private.2", "user.abc", "user.",
                                   "user.01", "sse", "submission.5.staff", "admin.everything",
                                   "user.1 "])
def test_unknown_topic_forms_are_bad_requests(app, people, topic):
    response = open_stream(client_for(app, "root"), topic)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "unknown_topic"


def test_stream_needs_between_one_and_twenty_topics(app, people):
    root = client_for(app, "root")
    assert root.get("/events").status_code == 400
    assert status_of(root, *[f"user.{n}" for n in range(1, 22)]) == 400


def test_bearer_token_opens_a_stream_for_its_own_user_only(app, people, submissions):
    anonymous = browser(app)
    headers = Auth(anonymous).token("alice@uni.test")
    assert status_of(anonymous, f"submission.{submissions['alice']}", headers=headers) == 200
    assert status_of(anonymous, f"submission.{submissions['carol']}", headers=headers) == 403
    assert status_of(anonymous, f"user.{people['alice']}",
                     headers={"Authorization": "Bearer not-a-token"}) == 401


# --- delivery ---------------------------------------------------------------------------------


def test_stream_starts_at_once_with_its_headers_and_sends_heartbeats(app, people):
    alice = client_for(app, "alice")
    started = time.monotonic()
    response = open_stream(alice, f"user.{people['alice']}")
    reader = StreamReader(response)
    first = reader.next_frame()
    assert first.comment == "stream open"  # sent at once, before any heartbeat was due
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    assert first.retry == 3000
    beats = [reader.next_frame() for _ in range(3)]
    assert [frame.comment for frame in beats] == ["heartbeat"] * 3
    assert time.monotonic() - started < 5 * HEARTBEAT
    reader.close()


def test_step_events_arrive_live_with_the_database_event_id(app, submissions):
    reader = follow(client_for(app, "alice"), f"submission.{submissions['alice']}")
    event_id = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    [frame] = reader.events(1)
    assert (frame.event, frame.id) == ("step", event_id)
    assert frame.data["step"] == "scan"
    assert frame.data["status"] == "running"
    assert frame.data["detail"] == "Running (attempt 1)"
    reader.close()


def test_event_on_two_followed_topics_arrives_once(app, people, submissions):
    reader = follow(client_for(app, "alice"), f"user.{people['alice']}",
                    f"submission.{submissions['alice']}")
    first = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    second = step_event(submissions["alice"], "scan", "succeeded", "No threats found")
    assert [frame.id for frame in reader.events(2)] == [first, second]
    assert reader.events_within(0.5) == []
    reader.close()


def test_failed_step_error_reaches_course_staff_but_not_the_student(app, submissions):
    topic = f"submission.{submissions['alice']}"
    readers = {name: follow(client_for(app, name), topic) for name in ("alice", "sam", "root")}
    step_event(submissions["alice"], "email", "failed",
               "Gave up after 8 attempts; staff have been alerted",
               error="SMTPServerDisconnected: Connection unexpectedly closed")
    seen = {name: reader.events(1)[0].data for name, reader in readers.items()}
    assert seen["alice"]["detail"] == "Gave up after 8 attempts; staff have been alerted"
    assert "error" not in seen["alice"]
    for staff in ("sam", "root"):
        assert seen[staff]["error"] == "SMTPServerDisconnected: Connection unexpectedly closed"
    for reader in readers.values():
        reader.close()


def test_events_of_other_topics_are_not_delivered(app, people, submissions):
    reader = follow(client_for(app, "alice"), f"user.{people['alice']}")
    step_event(submissions["carol"], "scan", "running", "Running (attempt 1)")
    mine = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    assert [frame.id for frame in reader.events(1)] == [mine]
    reader.close()


# --- reconnecting -----------------------------------------------------------------------------


def test_reconnect_replays_what_was_missed_then_goes_live_without_gaps_or_repeats(
        app, submissions):
    topic = f"submission.{submissions['alice']}"
    alice = client_for(app, "alice")
    reader = follow(alice, topic)
    seen = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    assert [frame.id for frame in reader.events(1)] == [seen]
    reader.close()

    # While the browser is away: more than one replay batch of events.
    submission = db.session.get(Submission, submissions["alice"])
    for attempt in range(2, 2 + event_hub.BATCH + 10):
        record_step(submission.step("scan"), "running", f"Running (attempt {attempt})")
    db.session.commit()
    missed = db.session.scalars(
        db.select(Event.id).where(Event.id > seen).order_by(Event.id)).all()

    reader = follow(alice, topic, headers={"Last-Event-ID": str(seen)})
    received = [frame.id for frame in reader.events(1)]
    # Published while the stream is still replaying.
    during = [step_event(submissions["alice"], "scan", "succeeded", "No threats found"),
              step_event(submissions["alice"], "store", "running", "Running (attempt 1)")]
    expected = missed + during
    received += [frame.id for frame in reader.events(len(expected) - 1)]
    assert received == expected
    assert reader.events_within(0.5) == []
    reader.close()


def test_last_event_id_query_parameter_resumes_like_the_header(app, submissions):
    first = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    second = step_event(submissions["alice"], "scan", "succeeded", "No threats found")
    alice = client_for(app, "alice")
    topic = f"submission.{submissions['alice']}"
    reader = follow(alice, topic, query=f"last_event_id={first - 1}")
    assert [frame.id for frame in reader.events(2)] == [first, second]
    reader.close()
    # A Last-Event-ID header (sent by the browser's own reconnect) wins over the page's query.
    reader = follow(alice, topic, query=f"last_event_id={first - 1}",
                    headers={"Last-Event-ID": str(first)})
    assert [frame.id for frame in reader.events(1)] == [second]
    reader.close()


def test_lower_id_published_late_is_delivered_first_and_survives_a_reconnect(
        app, people, submissions):
    app.config["SSE_GAP_WAIT_SECONDS"] = Config.SSE_GAP_WAIT_SECONDS
    topic = f"user.{people['alice']}"
    alice = client_for(app, "alice")
    reader = follow(alice, topic)
    wait_until_live(reader, topic)
    # Two transactions: the lower id commits (and publishes) after the higher one.
    earlier = unpublished_event(topic)
    later = unpublished_event(topic)
    publish(*later, [topic])
    assert reader.events_within(0.6) == []
    publish(*earlier, [topic])
    assert [frame.id for frame in reader.events(2)] == [earlier[0], later[0]]
    reader.close()

    # Out of order again, this time while the browser is away; it resumes after what it had.
    had = later[0]
    earlier = unpublished_event(topic)
    later = unpublished_event(topic)
    publish(*later, [topic])
    publish(*earlier, [topic])
    reader = follow(alice, topic, headers={"Last-Event-ID": str(had)})
    assert [frame.id for frame in reader.events(2)] == [earlier[0], later[0]]
    assert reader.events_within(0.5) == []
    reader.close()


def test_event_whose_publish_was_lost_is_found_in_the_database(app, people):
    topic = f"user.{people['alice']}"
    reader = follow(client_for(app, "alice"), topic)
    lost = unpublished_event(topic)
    after = unpublished_event(topic)
    publish(*after, [topic])
    frames = reader.events(2, timeout=3)
    assert [frame.id for frame in frames] == [lost[0], after[0]]
    assert frames[0].data == {"note": "quiet"}
    reader.close()


@pytest.mark.slow
def test_hub_carries_on_after_redis_hangs_and_sends_what_it_missed(app, people, tmp_path,
                                                                   caplog):
    hung = RedisServer(tmp_path / "redis").start()  # this test's own, to hang
    app.config["REDIS_URL"] = hung.url
    app.extensions.pop("submissions_redis").close()
    try:
        topic = f"user.{people['alice']}"
        reader = follow(client_for(app, "alice"), topic)
        wait_until_live(reader, topic)
        with paused(hung.process):
            # Past the hub's socket timeout (10 s): its calls to Redis fail, and it starts over.
            time.sleep(12)
            missed = unpublished_event(topic)
        emit("submission", {"note": "after"}, [topic])
        db.session.commit()
        frames = reader.events(2, timeout=30)
        assert [(frame.id, frame.data) for frame in frames] == [
            (missed[0], missed[2]), (newest_event_id(), {"note": "after"})]
        assert "event=hub_interrupted" in caplog.text  # the hang reached it
        reader.close()
    finally:
        event_hub.stop_hub()
        hung.stop()


@pytest.mark.skipif(os.environ.get("TEST_DATABASE") != "postgres",
                    reason="SQLite lets one writer at a time, so ids always commit in order")
def test_transactions_committing_out_of_id_order_lose_nothing(app, people):
    app.config["SSE_GAP_WAIT_SECONDS"] = Config.SSE_GAP_WAIT_SECONDS
    topic = f"user.{people['alice']}"
    reader = follow(client_for(app, "alice"), topic)
    wait_until_live(reader, topic)
    slow = Session(db.engine)
    early = Event(type="submission", payload={"note": "slow transaction"})
    early.topics = [EventTopic(topic=topic)]
    slow.add(early)
    slow.flush()
    emit("submission", {"note": "quick transaction"}, [topic])
    db.session.commit()
    late_id = newest_event_id()
    assert early.id < late_id
    assert reader.events_within(0.6) == []
    slow.commit()
    publish(early.id, early.type, early.payload, [topic])
    slow.close()
    assert [frame.id for frame in reader.events(2)] == [early.id, late_id]
    reader.close()


# --- resources and accounting ----------------------------------------------------------------


def test_idle_streams_hold_no_database_connection(app, people):
    clients = [client_for(app, "alice") for _ in range(4)]
    db.session.remove()
    before = db.engine.pool.checkedout()
    readers = [follow(client, f"user.{people['alice']}") for client in clients]
    for reader in readers:
        assert reader.next_frame().comment == "heartbeat"
    assert db.engine.pool.checkedout() == before
    for reader in readers:
        reader.close()


def test_stream_opening_and_closing_are_logged_with_user_topics_and_duration(
        app, people, caplog):
    caplog.set_level(logging.INFO, logger="app.events.stream")
    topic = f"user.{people['alice']}"
    reader = follow(client_for(app, "alice"), topic)
    reader.next_frame()
    reader.close()
    opened, closed = [r.getMessage() for r in caplog.records if "event=stream_" in r.getMessage()]
    assert "event=stream_opened" in opened and f"user_id={people['alice']}" in opened
    assert f"topics={topic}" in opened
    assert "event=stream_closed" in closed and f"user_id={people['alice']}" in closed
    assert f"topics={topic}" in closed
    duration = float(closed.split("duration_s=")[1].split()[0])
    assert HEARTBEAT <= duration < 5


def test_open_streams_are_counted_here_and_across_processes(app, people):
    redis_client = redis.Redis.from_url(app.config["REDIS_URL"])
    # A web process that died without saying so drops out of the sum.
    redis_client.hset(metrics.OPEN_STREAMS_KEY, "gone-host:1", 7)
    redis_client.hset(metrics.OPEN_STREAMS_SEEN_KEY, "gone-host:1", time.time() - 3600)
    readers = [follow(client_for(app, "alice"), f"user.{people['alice']}") for _ in range(3)]
    assert event_hub.open_stream_count() == 3
    wait_until(lambda: metrics.open_streams_all_processes() == 3)
    assert not redis_client.hexists(metrics.OPEN_STREAMS_KEY, "gone-host:1")
    for reader in readers:
        reader.close()
    assert event_hub.open_stream_count() == 0
    wait_until(lambda: metrics.open_streams_all_processes() == 0)
    redis_client.close()


# --- under gunicorn with the gevent worker, as in production ----------------------------------


@pytest.fixture
def web(app, tmp_path):
    server = WebServer(process_env(app), tmp_path / "web.log",
                       config={"SSE_HEARTBEAT_SECONDS": 1}).start()
    yield server
    server.stop()


def bearer_headers(web, name):
    response = requests.post(f"{web.url}/api/v1/tokens", timeout=5,
                             json={"email": f"{name}@uni.test", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def hub_connections(redis_client, pid):
    return [c for c in redis_client.client_list() if c["name"].endswith(f":{pid}")]


@pytest.mark.slow
def test_many_streams_in_one_web_process_share_one_redis_connection(
        app, web, people, submissions):
    redis_client = redis.Redis.from_url(app.config["REDIS_URL"])
    [worker_pid] = web.worker_pids()
    headers = {name: bearer_headers(web, name) for name in ("alice", "sam")}
    paths = {"alice": f"/events?topic=submission.{submissions['alice']}"
                      f"&topic=user.{people['alice']}",
             "sam": f"/events?topic=submission.{submissions['alice']}"}
    streams = [SocketStream(web.url, paths["alice"], headers["alice"])]
    assert streams[0].read_head() == 200
    wait_until(lambda: len(hub_connections(redis_client, worker_pid)) == 2)
    connections_with_one_stream = len(redis_client.client_list())

    for index in range(39):
        name = "sam" if index % 2 else "alice"
        stream = SocketStream(web.url, paths[name], headers[name])
        assert stream.read_head() == 200
        streams.append(stream)
    assert len(redis_client.client_list()) == connections_with_one_stream
    hub = hub_connections(redis_client, worker_pid)
    assert len(hub) == 2
    assert len([c for c in hub if c["psub"] != "0"]) == 1

    # Alice's streams follow both topics the event is on, and still get it once.
    running = step_event(submissions["alice"], "scan", "running", "Running (attempt 1)")
    assert all([frame.id for frame in stream.events(1)] == [running] for stream in streams)
    done = step_event(submissions["alice"], "scan", "succeeded", "No threats found")
    assert all([frame.id for frame in stream.events(1)] == [done] for stream in streams)
    for stream in streams:
        stream.close()
    redis_client.close()


@pytest.mark.slow
def test_heartbeat_comes_every_interval_under_gunicorn(web, people):
    stream = SocketStream(web.url, f"/events?topic=user.{people['alice']}",
                          bearer_headers(web, "alice"))
    opened = time.monotonic()
    assert stream.read_head() == 200
    assert time.monotonic() - opened < 1
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-accel-buffering"] == "no"
    beats = [at for at, frame in stream.frames_for(4.5) if frame.comment == "heartbeat"]
    assert len(beats) >= 3
    gaps = [later - earlier for earlier, later in zip([opened, *beats], beats, strict=False)]
    assert max(gaps) < 1.6
    stream.close()


@pytest.mark.slow
def test_stream_of_a_closed_browser_is_cleaned_up_by_the_next_heartbeat(web, people):
    headers = bearer_headers(web, "alice")
    streams = [SocketStream(web.url, f"/events?topic=user.{people['alice']}", headers)
               for _ in range(5)]
    for stream in streams:
        assert stream.read_head() == 200
    wait_until(lambda: metrics.open_streams_all_processes() == 5)
    for stream in streams[:3]:
        stream.close()
    closed_at = time.monotonic()
    wait_until(lambda: metrics.open_streams_all_processes() == 2, seconds=4)
    # Noticed at the next heartbeat (1 s), not when a later write fails (2 s), and reported
    # within the hub's next tick.
    assert time.monotonic() - closed_at < 1.7
    for stream in streams[3:]:
        stream.close()
    wait_until(lambda: metrics.open_streams_all_processes() == 0, seconds=4)


@pytest.mark.slow
def test_streams_past_a_thousand_descriptors_stay_open_and_live(web, people, submissions):
    # Descriptor numbers past 1023 are where select() gives up; a stream there must not be
    # taken for a closed browser at its first heartbeat.
    headers = bearer_headers(web, "alice")
    path = f"/events?topic=submission.{submissions['alice']}"
    streams = []
    for _ in range(1060):
        stream = SocketStream(web.url, path, headers)
        assert stream.read_head() == 200
        streams.append(stream)
    wait_until(lambda: metrics.open_streams_all_processes() == 1060, seconds=10)
    newest = streams[-1]
    assert any(frame.comment == "heartbeat" for _, frame in newest.frames_for(2.5))
    assert metrics.open_streams_all_processes() == 1060

    done = step_event(submissions["alice"], "scan", "succeeded", "No threats found")
    assert [frame.id for frame in newest.events(1)] == [done]
    for stream in streams:
        stream.close()
    wait_until(lambda: metrics.open_streams_all_processes() == 0, seconds=10)


def test_hub_starts_with_the_first_stream_not_with_the_app(app, people):
    hub_key = "submissions_event_hub"
    assert hub_key not in app.extensions
    assert event_hub.open_stream_count() == 0
    reader = follow(client_for(app, "alice"), f"user.{people['alice']}")
    assert app.extensions[hub_key]._thread.is_alive()
    assert event_hub.open_stream_count() == 1
    reader.close()
