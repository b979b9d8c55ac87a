"""Per-student extensions: staff grant one student on one assignment their own due time and
cut-off on the marking page (and withdraw it); that student's intake, late flag, pages, receipt
and API follow it, live; everyone else keeps the assignment's deadline."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from app.deadlines import grant_extension, withdraw_extension
from app.extensions import db
from app.models import Assignment, Extension, FlashMessage, Submission, User, utcnow
from app.services.mailer import receipt_body
from tests.conftest import Auth, csrf_from
from tests.e2e.live import client_for, follow
from tests.helpers import logged_in, upload_api, upload_form

pytestmark = pytest.mark.usefixtures("live_events")

ESSAY = b"My essay, at last.\n"
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def closed_essay(world):
    """The essay's cut-off passed an hour ago: nobody may submit without an extension. Plain
    ids and times, usable once a test has closed the session."""
    world.essay.due_at = utcnow() - timedelta(days=2)
    world.essay.cutoff_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    return type("Essay", (), {"id": world.essay.id, "due_at": world.essay.due_at,
                              "cutoff_at": world.essay.cutoff_at,
                              **{name: user.id for name, user in world.users.items()}})


def minute(dt):
    return dt.replace(second=0, microsecond=0)


def typed(dt):
    """How a member of staff types a time: in the course's zone, to the minute."""
    return dt.astimezone(LONDON).strftime("%Y-%m-%dT%H:%M")


def shown(dt):
    """How the pages show a time in the course's zone."""
    return dt.astimezone(LONDON).strftime("%a %d %b %Y, %H:%M %Z")


def grant(staff, assignment_id, student_id, due_at, cutoff_at=None, **fields):
    page = staff.get(f"/staff/assignments/{assignment_id}").get_data(as_text=True)
    data = {"csrf_token": csrf_from(page), "student_id": student_id,
            "due_at": typed(due_at) if due_at else "",
            "cutoff_at": typed(cutoff_at) if cutoff_at else "", **fields}
    return staff.post(f"/staff/assignments/{assignment_id}/extensions", data=data)


def withdraw(staff, assignment_id, student_id):
    page = staff.get(f"/staff/assignments/{assignment_id}").get_data(as_text=True)
    return staff.post(f"/staff/assignments/{assignment_id}/extensions/{student_id}/withdraw",
                      data={"csrf_token": csrf_from(page)})


def extensions():
    db.session.remove()
    return db.session.execute(db.select(Extension).order_by(Extension.id)).scalars().all()


def latest_submission():
    db.session.remove()
    return db.session.execute(
        db.select(Submission).order_by(Submission.id.desc()).limit(1)).scalar_one()


def test_student_with_an_extension_submits_after_the_cutoff_and_on_time_by_their_own_due(
        app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    due, cutoff = minute(utcnow() + timedelta(hours=1)), minute(utcnow() + timedelta(hours=3))
    response = grant(sam, essay.id, essay.alice, due, cutoff,
                     reason="Medical note")
    assert response.status_code == 303
    notice = sam.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Extension granted to Alice: due {shown(due)}, closing {shown(cutoff)}" in notice

    alice = logged_in(app, "alice@uni.test")
    accepted = upload_form(alice, essay.id, ESSAY, "essay.txt")
    assert accepted.status_code == 303, accepted.get_data(as_text=True)
    submission = latest_submission()
    assert submission.late is False
    receipt = alice.get(accepted.headers["Location"]).get_data(as_text=True)
    assert '<span id="timing" class="badge ontime">On time</span>' in receipt
    assert f"{shown(due)}" in re.search(r'<dd id="own-deadline">(.*?)</dd>', receipt, re.S)[1]
    assert f"Due (your extension): {shown(due)}" in receipt_body(submission, "http://x")

    bob = logged_in(app, "bob@uni.test")
    refused = upload_form(bob, essay.id, ESSAY, "essay.txt")
    assert refused.status_code == 403
    assert "Submissions closed at" in refused.get_data(as_text=True)
    assert db.session.query(Submission).filter_by(student_id=essay.bob).count() == 0


def test_work_after_the_students_own_due_time_is_late_by_it(app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    due, cutoff = minute(utcnow() - timedelta(minutes=30)), minute(utcnow() + timedelta(hours=2))
    assert grant(sam, essay.id, essay.alice, due, cutoff).status_code == 303

    alice = logged_in(app, "alice@uni.test")
    page = alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    assert 'id="late-warning"' in page and 'id="upload-form"' in page
    api = app.test_client()
    response = upload_api(api, Auth(api).token("alice@uni.test"), essay.id, ESSAY, "essay.txt")
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["late"] is True
    receipt = alice.get(f"/submissions/{response.get_json()['id']}").get_data(as_text=True)
    assert '<span id="timing" class="badge late">Late</span>' in receipt
    assert "marked late" in receipt_body(latest_submission(), "http://x")


def test_students_pages_and_api_show_their_own_deadline_and_nobody_elses(app, closed_essay,
                                                                           auth, client):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    due, cutoff = minute(utcnow() + timedelta(days=1)), minute(utcnow() + timedelta(days=2))
    grant(sam, essay.id, essay.alice, due, cutoff)

    alice = logged_in(app, "alice@uni.test")
    page = alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    own = re.search(r'<dd id="due">(.*?)</dd>', page, re.S)[1]
    assert shown(due) in own and "Your extension" in own
    assert shown(cutoff) in re.search(r'<dd id="closes">(.*?)</dd>', page, re.S)[1]
    assert re.search(r'id="countdown"[^>]*>Due in (23 hours 59 minutes|1 day)<', page)
    assert f'data-due="{due.isoformat()}"' in page
    assert 'id="upload-form"' in page and "Submissions closed" not in page
    listed = alice.get("/").get_data(as_text=True)
    row = re.search(rf'<tr id="assignment-{essay.id}">(.*?)</tr>', listed, re.S)[1]
    assert shown(due) in row and '<span class="badge open">Open</span>' in row

    bob = logged_in(app, "bob@uni.test")
    page = bob.get(f"/assignments/{essay.id}").get_data(as_text=True)
    assert 'id="extended"' not in page and shown(due) not in page
    assert 'id="upload-form"' not in page and "Submissions closed at" in page
    row = re.search(rf'<tr id="assignment-{essay.id}">(.*?)</tr>',
                    bob.get("/").get_data(as_text=True), re.S)[1]
    assert '<span class="badge closed">Closed</span>' in row

    for name, expected in (("alice", (due, cutoff, True, True)),
                           ("bob", (essay.due_at, essay.cutoff_at, False, False))):
        listed = client.get("/api/v1/assignments",
                            headers=auth.token(f"{name}@uni.test")).get_json()["assignments"]
        mine = next(a for a in listed if a["id"] == essay.id)
        iso = [t.isoformat().replace("+00:00", "Z") for t in expected[:2]]
        assert (mine["due_at"], mine["cutoff_at"], mine["open"], mine["extended"]) == (
            *iso, *expected[2:])


def test_only_the_courses_staff_may_grant_or_withdraw(app, closed_essay):
    # Refused as every marking page refuses: 404, so nothing shows the assignment is there.
    essay = closed_essay
    alice_id = essay.alice
    due, cutoff = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2)
    alice = logged_in(app, "alice@uni.test")
    own_page = alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    attempt = {"csrf_token": csrf_from(own_page), "student_id": alice_id,
               "due_at": typed(due), "cutoff_at": typed(cutoff)}
    url = f"/staff/assignments/{essay.id}/extensions"
    assert alice.post(url, data=attempt).status_code == 404
    assert alice.post(f"{url}/{alice_id}/withdraw",
                      data={"csrf_token": attempt["csrf_token"]}).status_code == 404
    tess = logged_in(app, "tess@uni.test")
    tess_token = csrf_from(tess.get("/").get_data(as_text=True))
    assert tess.post(url, data={**attempt, "csrf_token": tess_token}).status_code == 404
    assert app.test_client().post(url, data=attempt).status_code in (302, 400)
    assert extensions() == []

    root = logged_in(app, "root@uni.test")
    assert grant(root, essay.id, alice_id, due, cutoff).status_code == 303
    [extension] = extensions()
    assert extension.granted_by.email == "root@uni.test"


@pytest.mark.parametrize("due, cutoff, student, message", [
    ("2030-07-01T10:00", "2030-07-01T09:00", "alice",
     "The cut-off cannot be before the due time."),
    ("", "2030-07-01T09:00", "alice", "Choose the new due time."),
    ("next tuesday", "2030-07-01T09:00", "alice", "Enter a date and time"),
    ("2030-03-31T01:30", "2030-07-01T09:00", "alice", "does not exist in Europe/London"),
    ("2030-07-01T10:00", "", "alice", "Give a new cut-off too"),
    ("2020-01-01T10:00", "2030-07-01T09:00", "alice",
     "An extension cannot be due before the assignment itself"),
    ("2030-07-01T10:00", "2030-07-01T11:00", "carol", "Choose a student enrolled in CS101."),
    ("2030-07-01T10:00", "2030-07-01T11:00", "sam", "Choose a student enrolled in CS101."),
])
def test_bad_input_is_refused_with_a_clear_error_and_changes_nothing(
        app, closed_essay, due, cutoff, student, message):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    page = sam.get(f"/staff/assignments/{essay.id}").get_data(as_text=True)
    response = sam.post(f"/staff/assignments/{essay.id}/extensions", data={
        "csrf_token": csrf_from(page), "student_id": getattr(essay, student),
        "due_at": due, "cutoff_at": cutoff})
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert message in body
    assert re.search(r'<p class="notice error" role="alert"[^>]*>[^<]*' + re.escape(message),
                     body)
    assert extensions() == [] and db.session.query(FlashMessage).count() == 0


def test_a_cutoff_already_passed_is_refused(app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    # Later than the assignment's own cut-off, but already past.
    cutoff = minute(utcnow() - timedelta(minutes=5))
    response = grant(sam, essay.id, essay.alice, minute(essay.due_at) + timedelta(minutes=1),
                     cutoff)
    assert response.status_code == 400
    assert "has already passed" in response.get_data(as_text=True)
    assert extensions() == []


def test_forms_without_a_csrf_token_change_nothing(app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    due = utcnow() + timedelta(hours=1)
    response = sam.post(f"/staff/assignments/{essay.id}/extensions", data={
        "student_id": essay.alice, "due_at": typed(due), "cutoff_at": typed(due)})
    assert response.status_code in (303, 400)
    assert extensions() == []


def test_withdrawn_extension_gives_the_student_the_class_deadline_again(app, closed_essay):
    essay = closed_essay
    alice_id = essay.alice
    sam = logged_in(app, "sam@uni.test")
    due, cutoff = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2)
    grant(sam, essay.id, alice_id, due, cutoff)
    page = sam.get(f"/staff/assignments/{essay.id}").get_data(as_text=True)
    assert f'id="extension-{alice_id}"' in page

    response = withdraw(sam, essay.id, alice_id)
    assert response.status_code == 303
    page = sam.get(response.headers["Location"]).get_data(as_text=True)
    assert "Extension withdrawn: Alice is due" in page
    assert f'id="extension-{alice_id}"' not in page and 'id="no-extensions"' in page

    alice = logged_in(app, "alice@uni.test")
    assert upload_form(alice, essay.id, ESSAY, "essay.txt").status_code == 403
    assert 'id="extended"' not in alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    [extension] = extensions()
    assert extension.end_reason == "withdrawn" and extension.ended_by.email == "sam@uni.test"
    assert extension.granted_by.email == "sam@uni.test" and extension.ended_at is not None
    flashes = db.session.execute(db.select(FlashMessage.text).filter_by(user_id=alice_id)
                                 .order_by(FlashMessage.id)).scalars().all()
    assert flashes[0].startswith("You have an extension for CS101: Essay")
    assert flashes[1].startswith("Your extension for CS101: Essay was withdrawn")

    again = withdraw(sam, essay.id, alice_id)
    assert "has no extension" in sam.get(again.headers["Location"]).get_data(as_text=True)


def test_granting_again_replaces_the_extension_and_keeps_the_audit_trail(app, closed_essay):
    essay = closed_essay
    alice_id = essay.alice
    sam = logged_in(app, "sam@uni.test")
    first = minute(utcnow() + timedelta(hours=1))
    second = minute(utcnow() + timedelta(hours=5))
    grant(sam, essay.id, alice_id, first, first)
    grant(sam, essay.id, alice_id, second, second)
    old, new = extensions()
    assert (old.end_reason, old.ended_by.email, old.due_at) == ("replaced", "sam@uni.test", first)
    assert (new.ended_at, new.due_at) == (None, second)
    page = sam.get(f"/staff/assignments/{essay.id}").get_data(as_text=True)
    assert page.count(f'id="extension-{alice_id}"') == 1 and shown(second) in page
    # A receipt keeps the deadline it was given under.
    alice = logged_in(app, "alice@uni.test")
    assert upload_form(alice, essay.id, ESSAY, "essay.txt").status_code == 303
    submission = latest_submission()
    withdraw(sam, essay.id, alice_id)
    receipt = alice.get(f"/submissions/{submission.id}").get_data(as_text=True)
    assert shown(second) in re.search(r'<dd id="own-deadline">(.*?)</dd>', receipt, re.S)[1]


def test_a_class_deadline_moved_past_an_extension_applies_to_its_student_too(app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    own = minute(utcnow() + timedelta(hours=1))
    grant(sam, essay.id, essay.alice, own, own)
    assignment = db.session.get(Assignment, essay.id)
    assignment.due_at = assignment.cutoff_at = utcnow() + timedelta(days=3)
    db.session.commit()
    alice = logged_in(app, "alice@uni.test")
    page = alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    assert shown(assignment.due_at) in re.search(r'<dd id="due">(.*?)</dd>', page, re.S)[1]


def test_the_students_open_page_hears_of_the_extension_at_once(app, closed_essay):
    essay = closed_essay
    alice_id, bob_id = essay.alice, essay.bob
    alice = client_for(app, "alice")
    page = alice.get(f"/assignments/{essay.id}").get_data(as_text=True)
    # The page follows the student's own topic (live.js) and redraws on a deadline event.
    assert f'data-user-id="{alice_id}"' in page and "upload.js" in page
    assert f'id="deadline" data-assignment-id="{essay.id}"' in page
    cursor = re.search(r'data-last-event-id="(\d*)"', page)[1]
    alice_stream = follow(alice, f"user.{alice_id}", query=f"last_event_id={cursor}")
    bob_stream = follow(client_for(app, "bob"), f"user.{bob_id}")

    sam = logged_in(app, "sam@uni.test")
    due, cutoff = minute(utcnow() + timedelta(hours=1)), minute(utcnow() + timedelta(hours=2))
    grant(sam, essay.id, alice_id, due, cutoff)
    deadline, flash = alice_stream.events(2)
    assert deadline.event == "deadline"
    assert deadline.data == {
        "assignment_id": essay.id, "student_id": alice_id, "due_at": due.isoformat(),
        "cutoff_at": cutoff.isoformat(), "extended": True, "by": "Sam"}
    assert flash.event == "flash" and flash.data["level"] == "success"
    assert flash.data["text"] == (f"You have an extension for CS101: Essay: it is now due "
                                  f"{shown(due)}; submissions close {shown(cutoff)}.")
    assert flash.data["link_url"] == f"/assignments/{essay.id}"
    assert bob_stream.events_within(0.5) == []

    withdraw(sam, essay.id, alice_id)
    deadline, flash = alice_stream.events(2)
    assert deadline.event == "deadline" and deadline.data["extended"] is False
    assert deadline.data["cutoff_at"] == essay.cutoff_at.isoformat()
    assert flash.data["level"] == "warning" and "withdrawn" in flash.data["text"]
    alice_stream.close()
    bob_stream.close()


def test_a_records_message_applied_twice_or_late_changes_nothing(app, closed_essay):
    essay = closed_essay
    essay = db.session.get(Assignment, closed_essay.id)
    alice = db.session.get(User, closed_essay.alice)
    now = utcnow()
    later, sooner = now + timedelta(days=3), now + timedelta(days=1)
    extension, changed = grant_extension(essay, alice, later, later, source="records",
                                         source_ref="msg-2", decided_at=now)
    db.session.commit()
    assert changed and extension.granted_by is None
    again, changed = grant_extension(essay, alice, later, later, source="records",
                                     source_ref="msg-2", decided_at=now)
    assert (again.id, changed) == (extension.id, False)
    # Decided before msg-2, arriving after it: stale.
    stale, changed = grant_extension(essay, alice, sooner, sooner, source="records",
                                     source_ref="msg-1", decided_at=now - timedelta(minutes=1))
    assert (stale.id, changed) == (extension.id, False)
    assert withdraw_extension(essay, alice, decided_at=now - timedelta(seconds=1)) is None
    assert withdraw_extension(essay, alice, decided_at=now + timedelta(seconds=1)) is not None
    db.session.commit()
    # A grant decided before that withdrawal, arriving after it, stays unapplied.
    _, changed = grant_extension(essay, alice, sooner, sooner, source="records",
                                 source_ref="msg-0", decided_at=now)
    assert changed is False
    db.session.commit()
    assert [(e.source_ref, e.end_reason) for e in extensions()] == [("msg-2", "withdrawn")]


def test_admins_read_the_extensions_with_who_granted_them(app, closed_essay):
    essay = closed_essay
    sam = logged_in(app, "sam@uni.test")
    grant(sam, essay.id, essay.alice, utcnow() + timedelta(hours=1),
          utcnow() + timedelta(hours=2), reason="Bereavement")
    root = logged_in(app, "root@uni.test")
    listing = root.get("/admin/extension/")
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert "alice@uni.test" in text and "sam@uni.test" in text
    # Filtered by course: the essay's (CS101) lists it, another course's does not.
    assert "alice@uni.test" in root.get("/admin/extension/?flt0_0=CS101").get_data(as_text=True)
    assert "alice@uni.test" not in root.get("/admin/extension/?flt0_0=ART200").get_data(
        as_text=True)
    [extension] = extensions()
    details = root.get(f"/admin/extension/details/?id={extension.id}").get_data(as_text=True)
    assert "Bereavement" in details
    assert root.get("/admin/extension/new/").status_code in (302, 403, 404)
    assert sam.get("/admin/extension/").status_code == 403
