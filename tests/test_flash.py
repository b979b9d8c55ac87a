import json
import re

import pytest

from app.extensions import db
from app.flash import send_flash
from app.models import FlashMessage
from tests.conftest import Auth, csrf_from
from tests.e2e.live import browser, client_for, follow

pytestmark = pytest.mark.usefixtures("live_events")


@pytest.fixture
def people(world):
    return {name: user.id for name, user in world.users.items()}


def flash_to(user_ids, text, **options):
    messages = send_flash(user_ids, text, **options)
    db.session.commit()
    return [message.id for message in messages]


def pending_on_page(client, path="/"):
    """The unacknowledged messages a page hands its script to show."""
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'<script type="application/json" id="pending-flashes">(.*?)</script>',
                      html, re.S)
    assert found, "the page has no pending-flashes block"
    return json.loads(found.group(1))


def page_cursor(client, path="/"):
    html = client.get(path).get_data(as_text=True)
    return int(re.search(r'data-last-event-id="(\d+)"', html).group(1))


def acknowledge(client, message_id, headers=None):
    return client.post(f"/api/v1/flash/{message_id}/ack", headers=headers or {})


def csrf_headers(client):
    return {"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True))}


def test_flash_arrives_live_on_its_users_topic_only(app, people):
    alice_stream = follow(client_for(app, "alice"), f"user.{people['alice']}")
    bob_stream = follow(client_for(app, "bob"), f"user.{people['bob']}")
    [message_id] = flash_to([people["alice"]], "Your essay was received", level="success",
                            link_url="/assignments/1", link_text="See it",
                            button_text="Got it", modal=True, hide_after=8)
    [frame] = alice_stream.events(1)
    assert frame.event == "flash"
    assert frame.data == {
        "id": message_id, "text": "Your essay was received", "level": "success",
        "link_url": "/assignments/1", "link_text": "See it", "button_text": "Got it",
        "modal": True, "hide_after": 8, "created_at": frame.data["created_at"],
    }
    assert bob_stream.events_within(0.5) == []
    alice_stream.close()
    bob_stream.close()


def test_flash_to_a_course_reaches_each_person_once(app, people):
    streams = {name: follow(client_for(app, name), f"user.{people[name]}")
               for name in ("alice", "bob", "sam")}
    ids = flash_to([people["alice"], people["bob"], people["sam"], people["alice"]],
                   "Lecture moved to room 2")
    assert len(ids) == 3
    for name, stream in streams.items():
        [frame] = stream.events(1)
        assert frame.data["text"] == "Lecture moved to room 2"
        assert db.session.get(FlashMessage, frame.data["id"]).user_id == people[name]
        assert stream.events_within(0.3) == []
        stream.close()


def test_flash_rolled_back_with_its_transaction_is_never_shown(app, people):
    stream = follow(client_for(app, "alice"), f"user.{people['alice']}")
    send_flash([people["alice"]], "This never happened")
    db.session.rollback()
    assert stream.events_within(0.5) == []
    stream.close()
    assert pending_on_page(client_for(app, "alice")) == []


def test_unacknowledged_flash_is_shown_again_on_every_page_until_acknowledged(
        app, people, world):
    alice = client_for(app, "alice")
    essay_page = f"/assignments/{world.essay.id}"
    [message_id] = flash_to([people["alice"]], "Grades for CS101 are out",
                            link_url=essay_page, link_text="See your grade")
    for path in ("/", essay_page):
        shown = pending_on_page(alice, path)
        assert [(m["id"], m["text"], m["link_text"]) for m in shown] == [
            (message_id, "Grades for CS101 are out", "See your grade")]
    assert acknowledge(alice, message_id, csrf_headers(alice)).status_code == 200
    assert pending_on_page(alice) == []
    assert pending_on_page(client_for(app, "bob")) == []


def test_flash_sent_as_the_student_clicks_away_reaches_the_next_page(app, people):
    alice = client_for(app, "alice")
    stream = follow(alice, f"user.{people['alice']}")
    stream.close()
    # Sent between two pages: no stream is open to carry it.
    [message_id] = flash_to([people["alice"]], "Your upload finished processing")
    assert [m["id"] for m in pending_on_page(alice)] == [message_id]
    # The next page's stream starts from the page's cursor, so it is replayed there too.
    cursor = page_cursor(alice)
    assert cursor < message_id
    stream = follow(alice, f"user.{people['alice']}", query=f"last_event_id={cursor}")
    assert [frame.data["id"] for frame in stream.events(1)] == [message_id]
    stream.close()


def test_flash_acknowledged_elsewhere_is_not_replayed_to_a_reconnecting_page(app, people):
    alice = client_for(app, "alice")
    cursor = page_cursor(alice)
    seen, unseen = flash_to([people["alice"]], "Seen in another tab") + flash_to(
        [people["alice"]], "Not seen yet")
    assert acknowledge(alice, seen, csrf_headers(alice)).status_code == 200
    stream = follow(alice, f"user.{people['alice']}", query=f"last_event_id={cursor}")
    assert [frame.data["id"] for frame in stream.events(1)] == [unseen]
    assert stream.events_within(0.5) == []
    stream.close()


def test_acknowledging_is_for_the_owner_only_and_can_be_repeated(app, people):
    [message_id] = flash_to([people["alice"]], "Submission received")
    bob = client_for(app, "bob")
    response = acknowledge(bob, message_id, csrf_headers(bob))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert db.session.get(FlashMessage, message_id).acked_at is None

    alice = client_for(app, "alice")
    first = acknowledge(alice, message_id, csrf_headers(alice))
    assert first.status_code == 200
    assert first.get_json()["id"] == message_id
    again = acknowledge(alice, message_id, csrf_headers(alice))
    assert again.status_code == 200
    assert again.get_json()["acked_at"] == first.get_json()["acked_at"]
    assert acknowledge(alice, 987654, csrf_headers(alice)).status_code == 404


def test_acknowledging_from_a_session_needs_the_csrf_header(app, people):
    [message_id] = flash_to([people["alice"]], "Submission received")
    alice = client_for(app, "alice")
    assert acknowledge(alice, message_id).status_code == 400
    db.session.expire_all()
    assert db.session.get(FlashMessage, message_id).acked_at is None
    assert acknowledge(alice, message_id, csrf_headers(alice)).status_code == 200


def test_acknowledging_with_a_bearer_token_or_without_a_login(app, people):
    [message_id] = flash_to([people["alice"]], "Submission received")
    anonymous = browser(app)
    assert acknowledge(anonymous, message_id).status_code == 401
    headers = Auth(anonymous).token("alice@uni.test")
    assert acknowledge(anonymous, message_id, headers).status_code == 200
    db.session.expire_all()
    assert db.session.get(FlashMessage, message_id).acked_at is not None


@pytest.mark.parametrize("options", [
    {"link_url": "javascript:alert(1)"},
    {"level": "shouting"},
    {"hide_after": 0},
])
def test_flash_with_an_unsafe_link_or_bad_option_is_refused(people, options):
    with pytest.raises(ValueError):
        send_flash([people["alice"]], "Hello", **options)


def test_acknowledge_endpoint_is_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "post" in paths["/flash/{flash_id}/ack"]
