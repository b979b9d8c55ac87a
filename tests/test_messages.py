"""Course and assignment conversations, and private threads with staff: who may read, post and
follow them; what each person sees (escaped text, safe links, pinned announcements, hidden
messages gone); the limits; unread counts; and live delivery with replay after a reconnect."""

import re

import pytest

from app.extensions import db
from app.messages.text import linkify
from app.models import Event, FlashMessage, Message
from tests.conftest import LIVE_HEARTBEAT, Auth, csrf_from
from tests.e2e.live import browser, client_for, follow, open_stream
from tests.helpers import logged_in

pytestmark = pytest.mark.usefixtures("live_events")

HEARTBEAT = LIVE_HEARTBEAT


@pytest.fixture
def ids(world):
    """Plain ids, since the views share the test's session."""
    return type("Ids", (), {
        "cs": world.cs.id, "art": world.art.id, "essay": world.essay.id,
        "sketch": world.sketch.id, **{name: user.id for name, user in world.users.items()}})


def token(app, name):
    # One token per person per test: logging in for each request would meet the login limit.
    tokens = app.extensions.setdefault("test_message_tokens", {})
    if name not in tokens:
        tokens[name] = Auth(app.test_client()).token(f"{name}@uni.test")
    return tokens[name]


def api_post(app, name, url, body, **extra):
    return app.test_client().post(url, json={"body": body, **extra}, headers=token(app, name))


def api_get(app, name, url):
    return app.test_client().get(url, headers=token(app, name))


def course_api(ids):
    return f"/api/v1/courses/{ids.cs}/messages"


def essay_api(ids):
    return f"/api/v1/assignments/{ids.essay}/messages"


def private_api(ids, student="alice"):
    return f"/api/v1/courses/{ids.cs}/private/{getattr(ids, student)}/messages"


def page_post(client, page_url, post_url, body, **extra):
    page = client.get(page_url).get_data(as_text=True)
    return client.post(post_url, data={"csrf_token": csrf_from(page), "body": body, **extra})


def bodies(response):
    return [message["body"] for message in response.get_json()["messages"]]


# --- posting and reading ---------------------------------------------------------------------


def test_student_posts_on_the_course_page_and_a_classmate_and_staff_read_it(app, ids):
    alice = logged_in(app, "alice@uni.test")
    response = page_post(alice, f"/courses/{ids.cs}", f"/courses/{ids.cs}",
                         "Is the lab open on Friday?")
    assert response.status_code == 303
    message = db.session.execute(db.select(Message)).scalar_one()
    assert response.headers["Location"].endswith(f"/courses/{ids.cs}#message-{message.id}")
    for reader in ("bob", "sam", "root"):
        page = logged_in(app, f"{reader}@uni.test").get(f"/courses/{ids.cs}")
        assert page.status_code == 200
        assert "Is the lab open on Friday?" in page.get_data(as_text=True), reader
    assert bodies(api_get(app, "bob", course_api(ids))) == ["Is the lab open on Friday?"]


def test_assignment_conversation_is_on_the_assignment_page_and_in_the_api(app, ids):
    posted = api_post(app, "bob", essay_api(ids), "Does the word count include references?")
    assert posted.status_code == 201
    message = posted.get_json()
    assert message["conversation"] == f"assignment.{ids.essay}"
    assert (message["author"]["name"], message["author"]["staff"]) == ("Bob", False)
    assert message["pinned"] is False and message["hidden"] is False
    reply = page_post(logged_in(app, "sam@uni.test"), f"/assignments/{ids.essay}",
                      f"/assignments/{ids.essay}/messages", "No, references are extra.")
    assert reply.status_code == 303
    assert f"/assignments/{ids.essay}#message-" in reply.headers["Location"]
    page = logged_in(app, "alice@uni.test").get(f"/assignments/{ids.essay}").get_data(
        as_text=True)
    assert "Does the word count include references?" in page
    assert "No, references are extra." in page
    assert 'class="badge staff">Staff' in page
    listed = api_get(app, "alice", essay_api(ids)).get_json()
    assert [m["author"]["staff"] for m in listed["messages"]] == [False, True]
    # The course's own conversation is another one.
    assert bodies(api_get(app, "alice", course_api(ids))) == []


def test_history_pages_back_with_before(app, ids):
    app.config["MESSAGE_RATE_LIMIT"] = (100, 60)
    for n in range(35):
        assert api_post(app, "alice", course_api(ids), f"note {n}").status_code == 201
    newest = api_get(app, "bob", course_api(ids)).get_json()
    assert [m["body"] for m in newest["messages"]] == [f"note {n}" for n in range(5, 35)]
    assert newest["has_older"] is True
    first = newest["messages"][0]["id"]
    older = api_get(app, "bob", f"{course_api(ids)}?before={first}").get_json()
    assert [m["body"] for m in older["messages"]] == [f"note {n}" for n in range(5)]
    assert older["has_older"] is False
    small = api_get(app, "bob", f"{course_api(ids)}?before={first}&limit=2").get_json()
    assert [m["body"] for m in small["messages"]] == ["note 3", "note 4"]
    assert small["has_older"] is True
    # The page shows the newest, and links to the older ones without script.
    page = logged_in(app, "bob@uni.test").get(f"/courses/{ids.cs}").get_data(as_text=True)
    assert "note 34" in page and "note 4<" not in page
    assert f'href="?before={first}#discussion"' in page
    paged = logged_in(app, "bob@uni.test").get(f"/courses/{ids.cs}?before={first}")
    assert "note 4<" in paged.get_data(as_text=True)
    for bad in ("before=abc", "before=0", "limit=0", "limit=101"):
        answer = api_get(app, "bob", f"{course_api(ids)}?{bad}")
        assert answer.status_code == 400, bad


# --- limits ----------------------------------------------------------------------------------


def test_too_long_and_empty_messages_are_refused_and_change_nothing(app, ids):
    too_long = "x" * 2001
    answer = api_post(app, "alice", course_api(ids), too_long)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "message_too_long"
    assert "at most 2,000 characters" in answer.get_json()["error"]["message"]
    for empty in ("", "   \n\t ", "\x00\x07"):
        answer = api_post(app, "alice", course_api(ids), empty)
        assert answer.get_json()["error"]["code"] == "empty_message", repr(empty)
    assert api_post(app, "alice", course_api(ids), 42).status_code == 400
    assert api_post(app, "alice", course_api(ids), "y" * 2000).status_code == 201

    page = page_post(logged_in(app, "alice@uni.test"), f"/assignments/{ids.essay}",
                     f"/assignments/{ids.essay}/messages", too_long)
    assert page.status_code == 400
    shown = page.get_data(as_text=True)
    assert "Messages may be at most 2,000 characters; this one has 2,001." in shown
    assert too_long in shown  # kept in the form, to shorten
    assert db.session.query(Message).count() == 1


def test_posting_too_fast_is_refused_with_retry_after(app, ids):
    app.config["MESSAGE_RATE_LIMIT"] = (3, 60)
    for n in range(3):
        assert api_post(app, "alice", course_api(ids), f"quick {n}").status_code == 201
    refused = api_post(app, "alice", essay_api(ids), "one too many")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    page = page_post(logged_in(app, "alice@uni.test"), f"/courses/{ids.cs}",
                     f"/courses/{ids.cs}", "and again")
    assert page.status_code == 429
    assert "You are sending messages too fast" in page.get_data(as_text=True)
    assert int(page.headers["Retry-After"]) >= 1
    # Everyone has a limit of their own.
    assert api_post(app, "bob", course_api(ids), "my first").status_code == 201
    assert db.session.query(Message).count() == 4


# --- what is shown: text, never HTML ----------------------------------------------------------


HOSTILE = ('<script>alert("x")</script> <img src=x onerror=alert(1)> see '
           'https://example.org/a?b=1&c=2. or (https://en.wikipedia.org/wiki/Queue_(abstract)) '
           'not javascript:alert(1) nor https://evil.test/"onmouseover="alert(1)')


def test_messages_are_escaped_and_only_http_links_are_made_clickable(app, ids):
    assert api_post(app, "alice", course_api(ids), HOSTILE).status_code == 201
    page = logged_in(app, "bob@uni.test").get(f"/courses/{ids.cs}").get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    links = re.findall(r'<a href="([^"]*)" rel="noopener nofollow ugc" target="_blank">', page)
    assert links == ["https://example.org/a?b=1&amp;c=2",
                     "https://en.wikipedia.org/wiki/Queue_(abstract)",
                     "https://evil.test/"]
    assert 'href="javascript' not in page and "onmouseover=\"alert" not in page
    # The API and the live event carry the same safe HTML beside the text as typed.
    message = api_get(app, "bob", course_api(ids)).get_json()["messages"][0]
    assert message["body"] == HOSTILE
    assert message["html"] == str(linkify(HOSTILE))
    assert "<script" not in message["html"]


@pytest.mark.parametrize("text, html", [
    ("http://a.test", '<a href="http://a.test" rel="noopener nofollow ugc" '
                      'target="_blank">http://a.test</a>'),
    ("see https://a.test/x, then", 'see <a href="https://a.test/x" rel="noopener nofollow ugc" '
                                   'target="_blank">https://a.test/x</a>, then'),
    ("ftp://a.test and www.a.test", "ftp://a.test and www.a.test"),
    ("a < b & c", "a &lt; b &amp; c"),
    ("xhttps://a.test", "xhttps://a.test"),
])
def test_linkify(text, html):
    assert str(linkify(text)) == html


# --- pin and hide ----------------------------------------------------------------------------


def test_staff_pin_an_announcement_and_every_student_gets_it_as_a_flash(app, ids):
    posted = api_post(app, "sam", essay_api(ids), "Deadline moved to Monday 09:00.", pin=True)
    assert posted.status_code == 201 and posted.get_json()["pinned"] is True
    listed = api_get(app, "alice", essay_api(ids)).get_json()
    assert listed["pinned"]["body"] == "Deadline moved to Monday 09:00."
    flashes = db.session.execute(db.select(FlashMessage.user_id, FlashMessage.text,
                                           FlashMessage.link_url)).all()
    assert sorted(user for user, _, _ in flashes) == sorted([ids.alice, ids.bob])
    assert {text for _, text, _ in flashes} == {
        "Announcement in CS101: Essay: Deadline moved to Monday 09:00."}
    assert {link for _, _, link in flashes} == {f"/assignments/{ids.essay}#discussion"}
    page = logged_in(app, "bob@uni.test").get(f"/assignments/{ids.essay}").get_data(as_text=True)
    assert re.search(r'id="pinned">\s*<p class="pinned-label">Announcement · Sam', page)

    # A new pin replaces the old; unpinning leaves none.
    second = api_post(app, "alice", essay_api(ids), "Thanks!").get_json()
    sam = token(app, "sam")
    client = app.test_client()
    assert client.patch(f"/api/v1/messages/{second['id']}", json={"pinned": True},
                        headers=sam).get_json()["pinned"] is True
    assert api_get(app, "bob", essay_api(ids)).get_json()["pinned"]["id"] == second["id"]
    client.patch(f"/api/v1/messages/{second['id']}", json={"pinned": False}, headers=sam)
    assert api_get(app, "bob", essay_api(ids)).get_json()["pinned"] is None


def test_only_staff_pin_and_not_in_a_private_thread(app, ids):
    refused = api_post(app, "alice", course_api(ids), "Everyone look!", pin=True)
    assert refused.status_code == 403
    private = api_post(app, "sam", private_api(ids), "Just for you", pin=True)
    assert private.status_code == 400
    assert db.session.query(Message).count() == 0
    assert db.session.query(FlashMessage).count() == 0


def test_hidden_message_is_gone_for_everyone_live_and_in_replays(app, ids):
    kept = api_post(app, "bob", course_api(ids), "A fair question").get_json()
    rude = api_post(app, "bob", course_api(ids), "Something rude").get_json()
    reader = follow(client_for(app, "alice"), f"course.{ids.cs}")
    # A student cannot hide, not even a classmate's message they can see.
    assert app.test_client().patch(f"/api/v1/messages/{rude['id']}", json={"hidden": True},
                                   headers=token(app, "alice")).status_code == 404
    hidden = app.test_client().patch(f"/api/v1/messages/{rude['id']}", json={"hidden": True},
                                     headers=token(app, "sam"))
    assert hidden.status_code == 200
    [frame] = reader.events(1)
    assert frame.event == "message"
    assert frame.data["id"] == rude["id"] and frame.data["change"] == "hidden"
    assert frame.data["hidden"] is True and frame.data["body"] == frame.data["html"] == ""
    reader.close()

    for name in ("alice", "bob", "sam"):
        assert bodies(api_get(app, name, course_api(ids))) == ["A fair question"], name
        page = logged_in(app, f"{name}@uni.test").get(f"/courses/{ids.cs}")
        assert "Something rude" not in page.get_data(as_text=True), name
    # Reconnecting from before both: the words are not replayed.
    replay = follow(client_for(app, "alice"), f"course.{ids.cs}",
                    headers={"Last-Event-ID": str(first_event_id() - 1)})
    frames = replay.events(3)
    replay.close()
    assert all("Something rude" not in str(frame.data) for frame in frames)
    assert [(f.data["id"], f.data["change"], f.data["hidden"]) for f in frames] == [
        (kept["id"], "posted", False), (rude["id"], "posted", True), (rude["id"], "hidden", True)]
    # The message itself keeps the words, for admins (who can show it again).
    assert db.session.get(Message, rude["id"]).body == "Something rude"


def test_staff_hide_from_the_page_without_script(app, ids):
    message = api_post(app, "alice", essay_api(ids), "Here is my whole answer: ...").get_json()
    sam = logged_in(app, "sam@uni.test")
    page = sam.get(f"/assignments/{ids.essay}").get_data(as_text=True)
    assert f'action="/messages/{message["id"]}"' in page
    response = sam.post(f"/messages/{message['id']}",
                        data={"csrf_token": csrf_from(page), "action": "hide"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/assignments/{ids.essay}#discussion")
    assert "my whole answer" not in sam.get(f"/assignments/{ids.essay}").get_data(as_text=True)
    # Students get no moderation buttons.
    page = logged_in(app, "bob@uni.test").get(f"/assignments/{ids.essay}").get_data(as_text=True)
    assert 'name="action"' not in page


def first_event_id():
    return db.session.scalar(db.select(db.func.min(Event.id)))


# --- private threads -------------------------------------------------------------------------


def test_private_thread_is_seen_by_its_student_and_the_courses_staff_only(app, ids):
    asked = api_post(app, "alice", private_api(ids), "I was ill; can I have more time?")
    assert asked.status_code == 201
    assert asked.get_json()["conversation"] == f"course.{ids.cs}.private.{ids.alice}"
    answered = page_post(logged_in(app, "sam@uni.test"),
                         f"/courses/{ids.cs}/private/{ids.alice}",
                         f"/courses/{ids.cs}/private/{ids.alice}", "Yes: two days.")
    assert answered.status_code == 303
    for name in ("alice", "sam", "root"):
        assert bodies(api_get(app, name, private_api(ids))) == [
            "I was ill; can I have more time?", "Yes: two days."], name
        page = logged_in(app, f"{name}@uni.test").get(f"/courses/{ids.cs}/private/{ids.alice}")
        assert "I was ill" in page.get_data(as_text=True), name
    for name in ("bob", "carol", "tess"):
        assert api_get(app, name, private_api(ids)).status_code == 404, name
        assert api_post(app, name, private_api(ids), "hi").status_code == 404, name
        page = logged_in(app, f"{name}@uni.test").get(f"/courses/{ids.cs}/private/{ids.alice}")
        assert page.status_code == 404, name
        for url in (course_api(ids), essay_api(ids)):
            assert "I was ill" not in api_get(app, name, url).get_data(as_text=True)
    # Nor is it in the course's conversation, or on the course page of a classmate.
    bob_page = logged_in(app, "bob@uni.test").get(f"/courses/{ids.cs}").get_data(as_text=True)
    assert "I was ill" not in bob_page and "two days" not in bob_page
    # Staff cannot open a "thread" with someone who is not a student of the course.
    assert api_get(app, "sam", private_api(ids, "carol")).status_code == 404
    assert api_get(app, "sam", private_api(ids, "sam")).status_code == 404
    # Staff see who wrote on the course page.
    staff_page = logged_in(app, "sam@uni.test").get(f"/courses/{ids.cs}").get_data(as_text=True)
    assert f'href="/courses/{ids.cs}/private/{ids.alice}">Alice</a>' in staff_page


def test_private_messages_go_live_to_the_student_and_staff_only(app, ids):
    staff = follow(client_for(app, "sam"), f"course.{ids.cs}.staff")
    student = follow(client_for(app, "alice"), f"user.{ids.alice}")
    classmate = follow(client_for(app, "bob"), f"course.{ids.cs}", f"user.{ids.bob}")
    asked = api_post(app, "alice", private_api(ids), "Private question").get_json()
    answer = api_post(app, "sam", private_api(ids), "Private answer").get_json()
    assert [f.data["id"] for f in staff.events(2)] == [asked["id"], answer["id"]]
    assert [f.data["id"] for f in student.events(2)] == [asked["id"], answer["id"]]
    assert classmate.events_within(1.0) == []
    for reader in (staff, student, classmate):
        reader.close()


# --- unread counts ---------------------------------------------------------------------------


def unread_badge(page, key):
    match = re.search(rf'data-unread-for="{re.escape(key)}"[^>]*data-unread="(\d+)"', page)
    assert match, f"no unread count for {key}"
    return int(match.group(1))


def test_unread_counts_on_the_assignment_list(app, ids):
    alice = logged_in(app, "alice@uni.test")
    for text in ("First question", "Second question"):
        api_post(app, "bob", essay_api(ids), text)
    api_post(app, "alice", essay_api(ids), "My own message is never unread")
    api_post(app, "sam", course_api(ids), "Welcome to CS101")
    rude = api_post(app, "bob", essay_api(ids), "Hidden before anyone read it").get_json()
    app.test_client().patch(f"/api/v1/messages/{rude['id']}", json={"hidden": True},
                            headers=token(app, "sam"))
    api_post(app, "sam", private_api(ids), "A word in private")

    index = alice.get("/").get_data(as_text=True)
    assert unread_badge(index, f"assignment.{ids.essay}") == 2
    assert unread_badge(index, f"course.{ids.cs}") == 1
    assert unread_badge(index, f"course.{ids.cs}.private.{ids.alice}") == 1
    assert "2 new" in index

    alice.get(f"/assignments/{ids.essay}")  # reading the conversation
    index = alice.get("/").get_data(as_text=True)
    assert unread_badge(index, f"assignment.{ids.essay}") == 0
    assert unread_badge(index, f"course.{ids.cs}") == 1

    # A message seen live on an open page is read once the page says so.
    latest = api_post(app, "bob", essay_api(ids), "Seen live").get_json()
    assert unread_badge(alice.get("/").get_data(as_text=True), f"assignment.{ids.essay}") == 1
    read = app.test_client().post(f"/api/v1/messages/{latest['id']}/read",
                                  headers=token(app, "alice"))
    assert read.status_code == 200
    assert unread_badge(alice.get("/").get_data(as_text=True), f"assignment.{ids.essay}") == 0

    # Staff count what students wrote to them privately, across the course.
    api_post(app, "alice", private_api(ids), "Thanks")
    api_post(app, "bob", private_api(ids, "bob"), "Me too")
    staff_index = logged_in(app, "sam@uni.test").get("/").get_data(as_text=True)
    assert unread_badge(staff_index, f"course.{ids.cs}.private") == 2


def test_unread_counts_follow_the_courses_topics_live(app, ids):
    index = logged_in(app, "alice@uni.test").get("/").get_data(as_text=True)
    assert f'data-live-topic="course.{ids.cs}"' in index
    assert f"course.{ids.cs}.staff" not in index
    staff_index = logged_in(app, "sam@uni.test").get("/").get_data(as_text=True)
    assert f'data-live-topic="course.{ids.cs}.staff"' in staff_index
    # An assignment's messages reach the course's topic too, which the list follows.
    reader = follow(client_for(app, "alice"), f"course.{ids.cs}")
    posted = api_post(app, "bob", essay_api(ids), "Counted live").get_json()
    [frame] = reader.events(1)
    assert (frame.data["id"], frame.data["conversation"], frame.data["change"]) == (
        posted["id"], f"assignment.{ids.essay}", "posted")
    reader.close()


def test_reading_a_conversation_tells_the_readers_other_pages_and_no_one_else(app, ids):
    alice = logged_in(app, "alice@uni.test")
    posted = api_post(app, "bob", essay_api(ids), "Read me in another tab").get_json()
    mine = follow(client_for(app, "alice"), f"user.{ids.alice}")
    bobs = follow(client_for(app, "bob"), f"user.{ids.bob}")

    alice.get(f"/assignments/{ids.essay}")  # the page that shows it marks it read
    [frame] = mine.events(1)
    assert frame.event == "read"
    assert frame.data == {"conversation": f"assignment.{ids.essay}", "upto": posted["id"]}

    # A page fetched only to count again (as an open page does after a read elsewhere) marks
    # nothing read: nobody saw it.
    api_post(app, "sam", course_api(ids), "Welcome to CS101")
    recounted = alice.get(f"/courses/{ids.cs}?recount=1").get_data(as_text=True)
    assert "Welcome to CS101" in recounted
    assert unread_badge(alice.get("/").get_data(as_text=True), f"course.{ids.cs}") == 1
    assert mine.events_within(3 * HEARTBEAT) == []

    # Nothing new read, nothing said: opening it again, or an older message, moves no mark.
    alice.get(f"/assignments/{ids.essay}")
    older = app.test_client().post(f"/api/v1/messages/{posted['id']}/read",
                                   headers=token(app, "alice"))
    assert older.status_code == 200
    assert mine.events_within(3 * HEARTBEAT) == []
    assert bobs.events_within(HEARTBEAT) == []
    mine.close()
    bobs.close()


# --- who may follow and open what --------------------------------------------------------------


def stream_status(app, name, topic):
    client = client_for(app, name) if name else browser(app)
    response = open_stream(client, topic)
    status = response.status_code
    response.close()
    return status


@pytest.mark.parametrize("topic, allowed", [
    ("course.{cs}", {"alice", "bob", "sam", "root"}),
    ("course.{cs}.staff", {"sam", "root"}),
    ("assignment.{essay}", {"alice", "bob", "sam", "root"}),
])
def test_course_topics_are_for_the_course_and_staff_topics_for_its_staff(app, ids, topic,
                                                                          allowed):
    topic = topic.format(cs=ids.cs, essay=ids.essay)
    for name in ("alice", "bob", "sam", "carol", "tess", "root"):
        expected = 200 if name in allowed else 403
        assert stream_status(app, name, topic) == expected, (name, topic)
    assert stream_status(app, None, topic) == 401
    assert stream_status(app, "root", "course.987654321") == 200  # admins follow anything
    assert stream_status(app, "alice", "course.987654321") == 403


def test_no_one_outside_the_course_reads_or_posts(app, ids):
    api_post(app, "alice", course_api(ids), "Inside CS101")
    for name in ("carol", "tess"):
        for url in (course_api(ids), essay_api(ids)):
            assert api_get(app, name, url).status_code == 404, (name, url)
            assert api_post(app, name, url, "let me in").status_code == 404, (name, url)
        visitor = logged_in(app, f"{name}@uni.test")
        assert visitor.get(f"/courses/{ids.cs}").status_code == 404
        assert visitor.get(f"/assignments/{ids.essay}").status_code == 404
    anonymous = app.test_client()
    assert anonymous.get(course_api(ids)).status_code == 401
    assert anonymous.post(course_api(ids), json={"body": "hi"}).status_code == 401
    assert anonymous.get(f"/courses/{ids.cs}").status_code == 302
    assert bodies(api_get(app, "alice", course_api(ids))) == ["Inside CS101"]


def test_forms_need_their_csrf_token(app, ids):
    alice = logged_in(app, "alice@uni.test")
    refused = alice.post(f"/courses/{ids.cs}", data={"body": "forged"})
    assert refused.status_code == 400
    refused = alice.post(f"/api/v1/courses/{ids.cs}/messages", json={"body": "forged"})
    assert refused.status_code == 400
    assert db.session.query(Message).count() == 0


# --- live and replay -------------------------------------------------------------------------


def test_messages_arrive_live_and_a_reconnect_replays_what_was_missed(app, ids):
    topic = f"assignment.{ids.essay}"
    reader = follow(client_for(app, "alice"), topic)
    first = api_post(app, "bob", essay_api(ids), "live one").get_json()
    [frame] = reader.events(1)
    assert (frame.event, frame.data["id"], frame.data["body"]) == ("message", first["id"],
                                                                   "live one")
    seen = frame.id
    reader.close()

    missed = [api_post(app, "sam", essay_api(ids), f"while away {n}").get_json()["id"]
              for n in range(3)]
    reader = follow(client_for(app, "alice"), topic, headers={"Last-Event-ID": str(seen)})
    replayed = reader.events(3)
    assert [f.data["id"] for f in replayed] == missed
    assert all(f.id > seen for f in replayed)
    after = api_post(app, "bob", essay_api(ids), "live again").get_json()
    assert [f.data["id"] for f in reader.events(1)] == [after["id"]]
    assert reader.events_within(0.5) == []
    reader.close()


# --- admin -----------------------------------------------------------------------------------


def test_admin_lists_filters_hides_and_shows_again(app, ids):
    kept = api_post(app, "alice", course_api(ids), "An ordinary question").get_json()
    rude = api_post(app, "bob", essay_api(ids), "Spam spam spam").get_json()
    carol = api_post(app, "carol", f"/api/v1/courses/{ids.art}/messages", "Art question")
    assert carol.status_code == 201
    admin = logged_in(app, "root@uni.test")
    listing = admin.get("/admin/message/").get_data(as_text=True)
    for text in ("An ordinary question", "Spam spam spam", "Art question"):
        assert text in listing
    filtered = admin.get("/admin/message/?flt0_0=ART200").get_data(as_text=True)
    assert "Art question" in filtered and "Spam spam spam" not in filtered

    reader = follow(client_for(app, "alice"), f"assignment.{ids.essay}")
    response = admin.post("/admin/message/action/", data={
        "csrf_token": csrf_from(listing), "action": "hide", "rowid": [str(rude["id"])]})
    assert response.status_code == 302
    assert "Hid 1 message." in admin.get(response.headers["Location"]).get_data(as_text=True)
    assert reader.events(1)[0].data["change"] == "hidden"
    assert bodies(api_get(app, "alice", essay_api(ids))) == []

    admin.post("/admin/message/action/", data={
        "csrf_token": csrf_from(listing), "action": "unhide", "rowid": [str(rude["id"])]})
    shown = reader.events(1)[0].data
    assert (shown["change"], shown["body"]) == ("shown", "Spam spam spam")
    assert bodies(api_get(app, "alice", essay_api(ids))) == ["Spam spam spam"]
    assert bodies(api_get(app, "alice", course_api(ids))) == [kept["body"]]
    reader.close()
    assert logged_in(app, "sam@uni.test").get("/admin/message/").status_code == 403
