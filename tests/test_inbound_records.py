"""Messages from the student-records system (POST /api/v1/inbound/records): signed as our
records to it are and recent, recorded at once, applied once by a worker on the `records` queue
in the order the changes were made; the student, staff and admins see what they changed."""

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from app.events import hub as event_hub
from app.events.publisher import emit
from app.extensions import db, get_redis
from app.inbound import apply_again, apply_message
from app.models import (
    Enrollment,
    Event,
    Extension,
    FlashMessage,
    InboundMessage,
    User,
    utcnow,
)
from jobs.maintenance import reconcile
from simulators.admin_records import AdminRecordsSimulator, RecordsSender, sign
from tests.conftest import Auth, csrf_from, process_env, run_jobs
from tests.e2e.live import client_for, follow, open_stream
from tests.e2e.servers import WebServer
from tests.helpers import logged_in, upload_form

SECRET = "test-inbound-secret"
URL = "/api/v1/inbound/records"
ESSAY = b"My essay, at last.\n"


@pytest.fixture(autouse=True)
def inbound_settings(app, live_events):
    app.config["ADMIN_SYNC_SECRET"] = SECRET


def message(kind, data, **fields):
    return RecordsSender.message(kind, data, **fields)


def send(client, msg, secret=SECRET, sent_at=None, headers=None):
    body, signed_headers = RecordsSender(URL, secret).signed(msg, sent_at=sent_at)
    return client.post(URL, data=body, headers={**signed_headers, **(headers or {})})


def post_raw(client, body, **headers):
    return client.post(URL, data=body, headers={"Content-Type": "application/json",
                                                "X-Signature": sign(SECRET, body), **headers})


def apply_all():
    run_jobs(["records"])


def inbound(message_id):
    db.session.remove()
    return db.session.execute(
        db.select(InboundMessage).filter_by(message_id=message_id)).scalar_one()


def user(email):
    db.session.remove()
    return db.session.execute(db.select(User).filter_by(email=email)).scalar_one()


def recorded():
    db.session.remove()
    return db.session.query(InboundMessage).count()


def flashes(user_id):
    return db.session.execute(db.select(FlashMessage.text).filter_by(user_id=user_id)
                              .order_by(FlashMessage.id)).scalars().all()


def events_of(type):
    db.session.remove()
    return db.session.execute(db.select(Event).filter_by(type=type)).scalars().all()


@pytest.fixture
def closed_essay(world):
    """The essay's cut-off passed an hour ago: nobody may submit without an extension."""
    world.essay.due_at = utcnow() - timedelta(days=2)
    world.essay.cutoff_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    return world.essay.id


def test_a_signed_message_is_recorded_at_once_and_a_worker_enrols_the_student(
        app, client, world):
    essay_id = world.essay.id
    msg = message("enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    response = send(client, msg)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["message_id"] == msg["message_id"]
    assert response.get_json()["state"] == "received"
    carol = logged_in(app, "carol@uni.test")
    assert carol.get(f"/assignments/{essay_id}").status_code == 404  # not applied yet

    apply_all()
    row = inbound(msg["message_id"])
    assert (row.state, row.detail) == ("applied", "Enrolled carol@uni.test in CS101 as student.")
    assert "Essay" in carol.get("/").get_data(as_text=True)
    assert upload_form(carol, essay_id, ESSAY, "essay.txt").status_code == 303
    carol_id = user("carol@uni.test").id
    assert flashes(carol_id) == ["You are now enrolled in CS101: Programming."]
    sam = logged_in(app, "sam@uni.test")
    assert "carol@uni.test" in sam.get(f"/staff/assignments/{essay_id}").get_data(
        as_text=True)


@pytest.mark.parametrize("case", ["missing", "wrong secret", "body changed", "not hex"])
def test_a_message_without_the_right_signature_is_401_and_records_nothing(app, client, world,
                                                                            case):
    msg = message("enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    body, headers = RecordsSender(URL, SECRET).signed(msg)
    if case == "missing":
        del headers["X-Signature"]
    elif case == "wrong secret":
        body, headers = RecordsSender(URL, "not-the-secret").signed(msg)
    elif case == "body changed":
        body = body.replace(b"carol@uni.test", b"alice@uni.test")
    else:
        headers["X-Signature"] = "sha256=not-a-signature"
    response = client.post(URL, data=body, headers=headers)
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == ("signature_missing" if case == "missing" else "bad_signature")
    assert recorded() == 0
    assert get_redis().llen("rq:queue:records") == 0


@pytest.mark.parametrize("minutes, status", [(-6, 401), (6, 401), (-4, 202)])
def test_a_message_sent_more_than_five_minutes_from_our_clock_is_refused_as_a_replay(
        app, client, world, minutes, status):
    msg = message("student.renamed", {"email": "alice@uni.test", "name": "Alice L"})
    response = send(client, msg, sent_at=utcnow() + timedelta(minutes=minutes))
    assert response.status_code == status, response.get_json()
    if status == 401:
        assert response.get_json()["error"]["code"] == "stale_message"
        assert "more than 5 minutes from our clock" in response.get_json()["error"]["message"]
        assert recorded() == 0


GONE = object()


def _message_body(changes):
    """A well-formed message with `changes` made (GONE drops a field; data_x changes data's x),
    its times taken now."""
    base = {"message_id": "m-1", "kind": "extension.granted", "sequence": 3,
            "occurred_at": utcnow().isoformat(), "sent_at": utcnow().isoformat(),
            "data": {"email": "alice@uni.test", "assignment_id": 1,
                     "due_at": (utcnow() + timedelta(days=1)).isoformat()}}
    for name, value in changes.items():
        holder = base["data"] if name.startswith("data_") else base
        holder[name.removeprefix("data_")] = value
    if isinstance(base["data"], dict):
        base["data"] = _without_gone(base["data"])
    return json.dumps(_without_gone(base)).encode()


def _without_gone(fields):
    return {name: value for name, value in fields.items() if value is not GONE}


@pytest.mark.parametrize("changes, says", [
    (b"not json at all", "The body is not JSON."),
    (b"[1, 2]", "Send one JSON object."),
    ({"sent_at": GONE}, "sent_at is required."),
    ({"message_id": GONE}, "message_id is required."),
    ({"kind": "grade.changed"}, "kind must be one of course.created"),
    ({"occurred_at": "2026-12-05T10:00:00"},
     "occurred_at must be an ISO-8601 time with its UTC offset."),
    ({"sequence": "7"}, "sequence must be a whole number of at least 0."),
    ({"data": []}, "data must be an object."),
    ({"data_email": GONE}, "data.email is required."),
    ({"data_due_at": "tomorrow"}, "data.due_at must be an ISO-8601 time"),
    ({"data_assignment_id": 0}, "data.assignment_id must be a positive id."),
])
def test_a_malformed_message_is_400_saying_what_is_wrong_and_records_nothing(
        app, client, world, changes, says):
    response = post_raw(client, changes if isinstance(changes, bytes)
                        else _message_body(changes))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_message" and says in error["message"]
    assert recorded() == 0


def test_without_a_secret_configured_messages_are_refused_with_503(app, client, world):
    app.config["ADMIN_SYNC_SECRET"] = None
    response = send(client, message("course.created", {"code": "BIO1", "title": "Biology"}))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "not_configured"
    assert recorded() == 0


def test_the_same_message_id_again_is_answered_200_and_applied_once(app, client, closed_essay):
    alice_id = user("alice@uni.test").id
    due = utcnow() + timedelta(hours=1)
    msg = message("extension.granted", {"email": "alice@uni.test", "assignment_id": closed_essay,
                                        "due_at": due.isoformat(),
                                        "cutoff_at": (due + timedelta(hours=2)).isoformat()})
    assert send(client, msg).status_code == 202
    again = send(client, msg)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    apply_all()
    late = send(client, msg)
    assert late.status_code == 200 and late.get_json()["state"] == "applied"
    apply_all()
    assert apply_message(inbound(msg["message_id"]).id) == "applied"
    assert recorded() == 1
    assert db.session.query(Extension).count() == 1
    assert len(events_of("deadline")) == 1
    [told] = flashes(alice_id)
    assert told.startswith("You have an extension for CS101: Essay")


def test_an_older_change_arriving_after_a_newer_one_changes_nothing(app, client, world):
    essay_id = world.essay.id
    now = utcnow()
    newer = message("student.renamed", {"email": "alice@uni.test", "name": "Alice Newer"},
                    occurred_at=now, sequence=20)
    older = message("student.renamed", {"email": "alice@uni.test", "name": "Alice Older"},
                    occurred_at=now - timedelta(minutes=1), sequence=10)
    # Bob removed, then (decided earlier) added: both waiting when the worker gets to them.
    removed = message("enrolment.removed", {"email": "bob@uni.test", "course": "CS101"},
                      occurred_at=now, sequence=21)
    added = message("enrolment.added", {"email": "bob@uni.test", "course": "CS101"},
                    occurred_at=now - timedelta(minutes=1), sequence=11)
    assert send(client, newer).status_code == 202
    apply_all()
    for msg in (older, removed, added):
        assert send(client, msg).status_code == 202
    apply_all()

    assert user("alice@uni.test").name == "Alice Newer"
    stale = inbound(older["message_id"])
    assert stale.state == "superseded"
    assert stale.detail == f"Message {newer['message_id']} made a later change to the same thing."
    assert inbound(added["message_id"]).state == "superseded"
    assert user("bob@uni.test").enrollments == []
    bob = logged_in(app, "bob@uni.test")
    assert bob.get(f"/assignments/{essay_id}").status_code == 404


def test_a_student_removed_from_a_course_gets_404_and_their_open_stream_stops_carrying_it(
        app, client, world):
    essay_id, alice_id, cs_id = world.essay.id, world.users["alice"].id, world.cs.id
    alice = client_for(app, "alice")
    alice_stream = follow(alice, f"user.{alice_id}", f"assignment.{essay_id}")
    bob_stream = follow(client_for(app, "bob"), f"assignment.{essay_id}")

    send(client, message("enrolment.removed", {"email": "alice@uni.test", "course": "CS101"}))
    apply_all()
    enrolment, flash = alice_stream.events(2)
    assert enrolment.event == "enrolment"
    assert enrolment.data == {"user_id": alice_id, "course_id": cs_id, "course": "CS101",
                              "role": None}
    assert flash.data["text"] == "You are no longer enrolled in CS101: Programming."

    emit("flash", {"assignment_id": essay_id, "text": "The essay room moved"},
         [f"assignment.{essay_id}"])
    db.session.commit()
    [news] = bob_stream.events(1)
    assert news.data["text"] == "The essay room moved"
    assert alice_stream.events_within(1.0) == []
    # Still open for her own notices.
    send(client, message("student.renamed", {"email": "alice@uni.test", "name": "Alice L"}))
    apply_all()
    [profile] = alice_stream.events(1)
    assert profile.event == "profile" and profile.data["name"] == "Alice L"

    assert alice.get(f"/assignments/{essay_id}").status_code == 404
    assert open_stream(alice, f"assignment.{essay_id}").status_code == 403
    alice_stream.close()
    bob_stream.close()


def test_a_stream_whose_access_cannot_be_checked_again_ends(app, client, world, monkeypatch):
    alice_id, essay_id = world.users["alice"].id, world.essay.id
    alice_stream = follow(client_for(app, "alice"), f"user.{alice_id}", f"assignment.{essay_id}")

    def database_away(user, topic):
        raise ConnectionError("database away")

    monkeypatch.setattr(event_hub, "may_follow", database_away)
    send(client, message("enrolment.removed", {"email": "alice@uni.test", "course": "CS101"}))
    apply_all()
    # Her browser reconnects, and the stream it asks for is authorized afresh.
    with pytest.raises(StopIteration):
        alice_stream.events_within(5.0)


def test_an_extension_from_records_lets_the_student_submit_after_the_cutoff(
        app, client, closed_essay):
    alice_id = user("alice@uni.test").id
    open_page = follow(client_for(app, "alice"), f"user.{alice_id}")
    due, cutoff = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=3)
    granted = message("extension.granted", {
        "email": "alice@uni.test", "assignment_id": closed_essay, "due_at": due.isoformat(),
        "cutoff_at": cutoff.isoformat(), "reason": "Medical note"})
    send(client, granted)
    apply_all()
    assert inbound(granted["message_id"]).state == "applied"
    # Her open page redraws the deadline and shows the notice, as for a grant by staff.
    deadline, flash = open_page.events(2)
    assert (deadline.event, deadline.data["extended"], deadline.data["by"]) == (
        "deadline", True, None)
    assert deadline.data["cutoff_at"] == cutoff.isoformat()
    assert flash.data["text"].startswith("You have an extension for CS101: Essay")
    open_page.close()
    alice = logged_in(app, "alice@uni.test")
    assert upload_form(alice, closed_essay, ESSAY, "essay.txt").status_code == 303
    bob = logged_in(app, "bob@uni.test")
    assert upload_form(bob, closed_essay, ESSAY, "essay.txt").status_code == 403
    [extension] = db.session.execute(db.select(Extension)).scalars().all()
    assert (extension.source, extension.source_ref, extension.granted_by) == (
        "records", granted["message_id"], None)
    sam = logged_in(app, "sam@uni.test")
    assert "by the student-records system" in sam.get(
        f"/staff/assignments/{closed_essay}").get_data(as_text=True)

    send(client, message("extension.withdrawn", {"email": "alice@uni.test",
                                                 "assignment_id": closed_essay}))
    apply_all()
    assert upload_form(alice, closed_essay, ESSAY, "essay.txt").status_code == 403


def test_a_new_name_and_email_show_on_the_staff_pages(app, client, world):
    essay_id = world.essay.id
    send(client, message("student.renamed", {"email": "alice@uni.test", "name": "Alice Liddell"}))
    send(client, message("student.email_changed", {"email": "alice@uni.test",
                                                   "new_email": "alice.liddell@uni.test"}))
    apply_all()
    sam = logged_in(app, "sam@uni.test")
    page = sam.get(f"/staff/assignments/{essay_id}").get_data(as_text=True)
    assert "Alice Liddell" in page and "alice.liddell@uni.test" in page
    assert "alice@uni.test" not in page
    renamed = app.test_client()
    assert Auth(renamed).login("alice.liddell@uni.test").status_code in (302, 303)
    assert "Essay" in renamed.get("/").get_data(as_text=True)


def test_admins_see_each_message_with_its_state_and_filter_by_state(app, client, world):
    applied = message("enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    rejected = message("extension.granted", {"email": "alice@uni.test", "assignment_id": 99999,
                                             "due_at": utcnow().isoformat()})
    send(client, applied)
    send(client, rejected)
    apply_all()
    unapplied = message("student.renamed", {"email": "alice@uni.test", "name": "A"})
    send(client, unapplied)

    root = logged_in(app, "root@uni.test")
    listing = root.get("/admin/inboundmessage/").get_data(as_text=True)
    for msg, state in ((applied, "applied"), (rejected, "rejected"), (unapplied, "received")):
        row = re.search(re.escape(msg["message_id"]) + r"(.*?)</tr>", listing, re.S)
        assert row and state in row[1], (msg["message_id"], state)
    assert "There is no assignment 99999." in listing
    only_rejected = root.get("/admin/inboundmessage/?flt0_0=rejected").get_data(as_text=True)
    assert rejected["message_id"] in only_rejected
    assert applied["message_id"] not in only_rejected
    row_id = inbound(applied["message_id"]).id
    details = root.get(f"/admin/inboundmessage/details/?id={row_id}").get_data(as_text=True)
    assert "enrolment:carol@uni.test:CS101" in details and "Enrolled carol@uni.test" in details
    assert root.get("/admin/inboundmessage/new/").status_code in (302, 403, 404)
    assert logged_in(app, "sam@uni.test").get("/admin/inboundmessage/").status_code == 403


def test_an_admin_applies_a_rejected_message_again_once_its_cause_is_put_right(
        app, client, world):
    taken = message("student.email_changed", {"email": "alice@uni.test",
                                              "new_email": "bob@uni.test"})
    applied = message("enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    send(client, taken)
    send(client, applied)
    apply_all()
    assert inbound(taken["message_id"]).detail == \
        "bob@uni.test is already the email of another account."
    ids = [str(inbound(m["message_id"]).id) for m in (taken, applied)]

    root = logged_in(app, "root@uni.test")
    listing = root.get("/admin/inboundmessage/").get_data(as_text=True)
    assert "Apply again" in listing
    # Applied again before the cause is put right, it is rejected again, for the same reason.
    answer = root.post("/admin/inboundmessage/action/", data={
        "csrf_token": csrf_from(listing), "action": "apply_again", "rowid": ids},
        follow_redirects=True).get_data(as_text=True)
    assert "1 message to be applied again" in answer
    assert inbound(taken["message_id"]).state == "received"
    apply_all()
    assert (inbound(taken["message_id"]).state, inbound(taken["message_id"]).detail) == \
        ("rejected", "bob@uni.test is already the email of another account.")

    # Bob's address changes in the records system, then the admin tries again.
    send(client, message("student.email_changed", {"email": "bob@uni.test",
                                                   "new_email": "robert@uni.test"}))
    apply_all()
    root.post("/admin/inboundmessage/action/", data={
        "csrf_token": csrf_from(listing), "action": "apply_again", "rowid": ids[:1]})
    apply_all()
    row = inbound(taken["message_id"])
    assert (row.state, row.detail) == \
        ("applied", "Changed the email of alice@uni.test to bob@uni.test.")
    assert user("bob@uni.test").name == "Alice"
    assert inbound(applied["message_id"]).state == "applied"  # left as it was

    none = root.post("/admin/inboundmessage/action/", data={
        "csrf_token": csrf_from(listing), "action": "apply_again", "rowid": ids},
        follow_redirects=True).get_data(as_text=True)
    assert "None of the selected messages was rejected" in none


def test_applying_again_while_redis_is_away_says_so_and_the_reconciler_queues_it(
        app, client, world, private_redis):
    taken = message("student.email_changed", {"email": "alice@uni.test",
                                              "new_email": "bob@uni.test"})
    send(client, taken)
    apply_all()
    send(client, message("student.email_changed", {"email": "bob@uni.test",
                                                   "new_email": "robert@uni.test"}))
    apply_all()
    row_id = inbound(taken["message_id"]).id
    root = logged_in(app, "root@uni.test")
    listing = root.get("/admin/inboundmessage/").get_data(as_text=True)

    private_redis.stop()
    try:
        answer = root.post("/admin/inboundmessage/action/", data={
            "csrf_token": csrf_from(listing), "action": "apply_again", "rowid": [str(row_id)]},
            follow_redirects=True).get_data(as_text=True)
    finally:
        private_redis.start()  # empty, as a restarted Redis without persistence comes back
    assert "Redis did not answer for 1 message" in answer
    assert inbound(taken["message_id"]).state == "received"

    app.config["RECONCILE_GRACE_SECONDS"] = 0
    assert reconcile()["messages_requeued"] == 1
    apply_all()
    assert inbound(taken["message_id"]).state == "applied"


def test_the_reconciler_applies_a_message_whose_job_redis_lost(app, client, world):
    msg = message("enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    assert send(client, msg).status_code == 202
    get_redis().flushdb()
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    assert reconcile()["messages_requeued"] == 1
    apply_all()
    assert inbound(msg["message_id"]).state == "applied"
    assert reconcile()["messages_requeued"] == 0


def test_a_message_about_a_course_still_on_its_way_waits_for_it(app, client, world):
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    enrol = message("enrolment.added", {"email": "carol@uni.test", "course": "BIO300"})
    send(client, enrol)
    apply_all()
    assert inbound(enrol["message_id"]).state == "received"
    assert inbound(enrol["message_id"]).detail == "Waiting: There is no course BIO300."
    send(client, message("course.created", {"code": "BIO300", "title": "Cells",
                                            "timezone": "Europe/London"}))
    apply_all()
    assert reconcile()["messages_requeued"] == 1
    apply_all()
    assert inbound(enrol["message_id"]).state == "applied"
    assert user("carol@uni.test").course_role(
        db.session.execute(db.select(Enrollment.course_id).join(Enrollment.course)
                           .filter_by(code="BIO300")).scalar_one()) == "student"

    never = message("enrolment.added", {"email": "carol@uni.test", "course": "NOPE1"})
    send(client, never)
    row = inbound(never["message_id"])
    row.received_at = utcnow() - timedelta(minutes=11)
    db.session.commit()
    apply_all()
    row = inbound(never["message_id"])
    assert row.state == "rejected"
    assert row.detail.startswith("There is no course NOPE1. (waited 11 minutes")

    # Applied again by an admin, it waits afresh for the course instead of failing at once.
    assert apply_again([row.id]) == (1, 0)
    apply_all()
    row = inbound(never["message_id"])
    assert (row.state, row.detail) == ("received", "Waiting: There is no course NOPE1.")
    send(client, message("course.created", {"code": "NOPE1", "title": "Late after all"}))
    apply_all()
    assert reconcile()["messages_requeued"] == 1
    apply_all()
    assert inbound(never["message_id"]).state == "applied"


def test_the_simulated_records_system_retries_a_5xx_and_not_a_4xx(app):
    simulator = AdminRecordsSimulator(secret=SECRET).start()
    try:
        simulator.inject(503, times=2)
        sender = RecordsSender(simulator.records_url, SECRET, backoff=0.01)
        msg = message("course.created", {"code": "X1", "title": "X"})
        assert sender.send(msg).status_code == 201
        assert len(simulator.requests(method="POST")) == 3
        forged = RecordsSender(simulator.records_url, "wrong", backoff=0.01)
        assert forged.send(msg).status_code == 401
        assert len(simulator.requests(method="POST")) == 4
    finally:
        simulator.stop()


@pytest.mark.slow
def test_a_burst_of_duplicated_reordered_and_forged_messages_is_applied_once_each(
        app, world, tmp_path):
    """As the records system behaves on a bad day, against a real web server: every message
    sent several times, in no particular order, beside replays and forgeries of them."""
    essay_id, cs_id = world.essay.id, world.cs.id
    web = WebServer(process_env(app, ADMIN_SYNC_SECRET=SECRET), tmp_path / "web.log").start()
    sender = RecordsSender(f"{web.url}{URL}", SECRET, backoff=0.05)
    now = utcnow()
    genuine = [message("student.renamed", {"email": "alice@uni.test", "name": f"Alice v{n}"},
                       occurred_at=now - timedelta(seconds=60 - n), sequence=n)
               for n in range(1, 11)]
    # Carol added, removed, added...: the last change (added) stands.
    genuine += [message(f"enrolment.{'added' if n % 2 else 'removed'}",
                        {"email": "carol@uni.test", "course": "CS101"},
                        occurred_at=now - timedelta(seconds=30 - n), sequence=100 + n)
                for n in range(1, 6)]
    due = (now + timedelta(days=3)).isoformat()
    genuine.append(message("extension.granted", {
        "email": "alice@uni.test", "assignment_id": essay_id, "due_at": due,
        "cutoff_at": due}, sequence=200))
    sends = [("genuine", msg) for msg in genuine for _ in range(3)]
    for msg in genuine:
        forged = {**msg, "data": {**msg["data"], "name": "Mallory", "email": "bob@uni.test"}}
        sends.append(("wrong secret", forged))
        sends.append(("new id, wrong secret", {**forged, "message_id": f"{msg['message_id']}-x"}))
        sends.append(("body changed", msg))
        sends.append(("captured long ago", msg))
    random.Random(14).shuffle(sends)

    def deliver(item):
        case, msg = item
        if case == "genuine":
            return case, msg["message_id"], sender.send(msg).status_code
        body, headers = sender.signed(msg, secret="not-the-secret" if "secret" in case else None,
                                      sent_at=now - timedelta(minutes=7)
                                      if case == "captured long ago" else None)
        if case == "body changed":
            body = body.replace(b"Alice v", b"Mallory v").replace(b"carol@", b"bob@")
            body = body[:-1] + b', "forged": true}'
        return case, msg["message_id"], sender.post(body, headers).status_code

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(deliver, sends))
    finally:
        web.stop()
        sender.close()
    assert {status for case, _, status in answers if case != "genuine"} == {401}
    firsts = [message_id for case, message_id, status in answers if status == 202]
    assert sorted(firsts) == sorted(msg["message_id"] for msg in genuine)
    assert {status for case, _, status in answers if case == "genuine"} <= {200, 202}

    apply_all()
    db.session.remove()
    assert recorded() == len(genuine)
    rows = db.session.execute(db.select(InboundMessage)).scalars().all()
    assert {row.state for row in rows} <= {"applied", "superseded"}
    assert user("alice@uni.test").name == "Alice v10"
    assert user("carol@uni.test").course_role(cs_id) == "student"
    assert "Mallory" not in json.dumps([row.payload for row in rows])
    assert user("bob@uni.test").course_role(cs_id) == "student"
    renames_applied = [row for row in rows
                       if row.kind == "student.renamed" and row.state == "applied"]
    assert len(events_of("profile")) == len(renames_applied)
    assert db.session.query(Extension).count() == 1
    assert len(events_of("deadline")) == 1
    # A worker running the whole queue again changes nothing.
    for row in rows:
        assert apply_message(row.id) == row.state
    db.session.commit()
    assert len(events_of("profile")) == len(renames_applied)
