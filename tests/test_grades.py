import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq_scheduler import Scheduler
from sqlalchemy import update

from app.extensions import db, get_redis
from app.grades.release_jobs import grade_email_job_id
from app.models import (
    Assignment,
    Event,
    EventTopic,
    FlashMessage,
    Grade,
    OutboxEmail,
    Submission,
    utcnow,
)
from app.steps import QUEUES
from tests.conftest import csrf_from, run_jobs
from tests.helpers import upload_api
from tests.smtp import SmtpServer


@pytest.fixture
def smtp(app):
    with SmtpServer() as server:
        app.config["SMTP_URL"] = server.url
        yield server


@pytest.fixture
def ids(world):
    """Plain ids of the world, usable after run_jobs() has closed the session."""
    return type("Ids", (), {"essay": world.essay.id, "sketch": world.sketch.id,
                            **{name: user.id for name, user in world.users.items()}})


def submission_for(world, student, assignment=None, ago=timedelta(hours=1), **fields):
    """A processed submission, as the pipeline leaves it."""
    content = f"{student} {ago}".encode()
    submission = Submission(
        assignment=assignment or world.essay, student=world.users[student],
        filename="essay.txt", content_type="text/plain", size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), received_at=utcnow() - ago,
        status=fields.pop("status", "completed"), **fields,
    )
    db.session.add(submission)
    db.session.commit()
    return submission.id


def marking_page(client, assignment_id):
    return client.get(f"/staff/assignments/{assignment_id}")


def save_mark(client, submission_id, score, feedback="", assignment_id=None):
    assignment_id = assignment_id or db.session.get(Submission, submission_id).assignment_id
    page = marking_page(client, assignment_id).get_data(as_text=True)
    return client.post(f"/staff/submissions/{submission_id}/grade", data={
        "csrf_token": csrf_from(page), f"s{submission_id}-score": score,
        f"s{submission_id}-feedback": feedback,
    })


def post_form(client, assignment_id, action, **fields):
    page = marking_page(client, assignment_id).get_data(as_text=True)
    return client.post(f"/staff/assignments/{assignment_id}/{action}",
                       data={"csrf_token": csrf_from(page), **fields})


def events_on(topic, type=None):
    db.session.remove()
    query = (db.select(Event).join(EventTopic).where(EventTopic.topic == topic)
             .order_by(Event.id))
    if type:
        query = query.where(Event.type == type)
    return db.session.execute(query).scalars().all()


def logout(client):
    page = client.get("/")
    if page.status_code == 200:
        client.post("/logout", data={"csrf_token": csrf_from(page.get_data(as_text=True))})


def student_view(client, auth, email, submission_id):
    """What the student sees: the API answer and the submission page."""
    logout(client)
    headers = auth.token(email)
    api = client.get(f"/api/v1/submissions/{submission_id}", headers=headers).get_json()
    auth.login(email)
    page = client.get(f"/submissions/{submission_id}").get_data(as_text=True)
    grade = re.search(r'<div id="grade">(.*?)</div>', page, re.S).group(1)
    return api, grade


def release_state(assignment_id):
    db.session.remove()
    return db.session.get(Assignment, assignment_id)


def scheduled_job_ids():
    return [job.id for job in Scheduler(queue_name="grades", connection=get_redis()).get_jobs()]


@pytest.mark.slow  # runs the whole pipeline for three uploads
def test_marking_page_shows_each_students_latest_submission_with_its_checks(
        client, auth, world, ids):
    world.essay.due_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    alice = auth.token("alice@uni.test")
    first = upload_api(client, alice, ids.essay, b"first draft of my essay\n", "a.txt")
    png = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
           b"\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01"
           b"\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")
    latest = upload_api(client, alice, ids.essay, png, "figure.png")
    bob = upload_api(client, auth.token("bob@uni.test"), ids.essay,
                     b"first draft of my essay\n", "b.txt")
    run_jobs()
    first_id, latest_id, bob_id = (r.get_json()["id"] for r in (first, latest, bob))

    auth.login("sam@uni.test")
    response = marking_page(client, ids.essay)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert re.search(r"<span id=\"marked-count\">0</span> of\s+<span id=\"total-count\">2</span>",
                     page)
    alice_row = re.search(rf'<tr id="row-{latest_id}".*?</tr>', page, re.S).group(0)
    assert "Alice" in alice_row and "figure.png" in alice_row
    assert f'href="/submissions/{first_id}">#{first_id}</a>' in alice_row  # earlier, listed
    assert "Late" in alice_row
    received = db.session.get(Submission, latest_id).received_at
    assert received.strftime("%Y-%m-%d %H:%M:%S UTC") in alice_row
    assert f'src="/submissions/{latest_id}/thumbnail"' in alice_row
    assert "completed" in alice_row
    bob_row = re.search(rf'<tr id="row-{bob_id}".*?</tr>', page, re.S).group(0)
    similarity = db.session.get(Submission, bob_id).similarity
    assert similarity is not None and f"{similarity}%" in bob_row
    assert f'name="s{first_id}-score"' not in page  # one mark per student: the latest


def test_marking_is_for_the_courses_staff_only(client, auth, world, ids):
    submission_id = submission_for(world, "alice")
    for email in ("alice@uni.test", "tess@uni.test"):
        headers = auth.token(email)
        auth.login(email)
        assert marking_page(client, ids.essay).status_code == 404
        assert client.post(f"/staff/submissions/{submission_id}/grade",
                           data={f"s{submission_id}-score": "10"}).status_code in (400, 404)
        put = client.put(f"/api/v1/submissions/{submission_id}/grade", headers=headers,
                         json={"score": 10})
        assert put.status_code == 404 and put.get_json()["error"]["code"] == "not_found"
        release = client.post(f"/api/v1/assignments/{ids.essay}/release", headers=headers)
        assert release.status_code == 404
        logout(client)
    assert db.session.query(Grade).count() == 0
    assert release_state(ids.essay).release_at is None
    auth.login("root@uni.test")
    assert marking_page(client, ids.essay).status_code == 200


def test_saved_mark_stays_hidden_from_the_student_until_release(client, auth, world, ids, smtp):
    submission_id = submission_for(world, "alice")
    auth.login("sam@uni.test")
    response = save_mark(client, submission_id, "41.5", "Clear argument; cite more sources.")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Students see it when grades are released" in page
    assert 'value="41.5"' in page
    staff_view = client.get(f"/submissions/{submission_id}").get_data(as_text=True)
    assert "41.5 / 50" in staff_view

    api, grade_box = student_view(client, auth, "alice@uni.test", submission_id)
    assert api["grade"] is None
    assert "Not released yet" in grade_box and "41.5" not in grade_box
    assert "cite more sources" not in client.get("/").get_data(as_text=True)
    for topic in (f"submission.{submission_id}", f"user.{ids.alice}",
                  f"assignment.{ids.essay}"):
        assert events_on(topic, "grade") == []
    assert "cite more sources" not in str([e.payload for e in events_on(
        f"user.{ids.alice}")])
    run_jobs()
    assert smtp.messages == [] and db.session.query(OutboxEmail).count() == 0
    [staff_event] = events_on(f"assignment.{ids.essay}.staff", "grade")
    assert staff_event.payload["score"] == 41.5
    assert staff_event.payload["progress"] == {"marked": 1, "total": 1, "released": 0}


@pytest.mark.parametrize("score", ["51", "-1", "abc", "", "nan", "inf"])
def test_a_score_outside_zero_to_the_maximum_is_refused(client, auth, world, score):
    submission_id = submission_for(world, "alice")
    auth.login("sam@uni.test")
    response = save_mark(client, submission_id, score)
    assert response.status_code == 400
    assert re.search(r'class="notice error" role="alert">(The score must be|Enter a score)',
                     response.get_data(as_text=True))
    assert db.session.query(Grade).count() == 0


@pytest.mark.parametrize("body", [{"score": 50.5}, {"score": True}, {"score": "12"},
                                  {"feedback": "no score"}, {"score": 10, "feedback": 7}])
def test_api_refuses_a_bad_grade(client, auth, world, body):
    submission_id = submission_for(world, "alice")
    headers = auth.token("sam@uni.test")
    response = client.put(f"/api/v1/submissions/{submission_id}/grade", headers=headers,
                          json=body)
    if body == {"score": "12"}:  # a numeric string is a number to a marker
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_grade"
    assert db.session.query(Grade).count() == 0


def test_api_marks_only_the_students_latest_accepted_submission(client, auth, world):
    earlier = submission_for(world, "alice", ago=timedelta(hours=3))
    latest = submission_for(world, "alice", ago=timedelta(hours=2))
    submission_for(world, "alice", ago=timedelta(hours=1), status="rejected")
    headers = auth.token("sam@uni.test")
    refused = client.put(f"/api/v1/submissions/{earlier}/grade", headers=headers,
                         json={"score": 30})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "not_latest_submission"
    saved = client.put(f"/api/v1/submissions/{latest}/grade", headers=headers,
                       json={"score": 30, "feedback": "Good"})
    assert saved.status_code == 200
    assert saved.get_json() == {
        "submission_id": latest, "score": 30.0, "max_score": 50, "feedback": "Good",
        "marker": "sam@uni.test", "updated_at": saved.get_json()["updated_at"],
        "released": False,
    }


def test_release_shows_grades_everywhere_and_tells_each_student_once(
        client, auth, world, ids, smtp):
    alice_sub = submission_for(world, "alice")
    bob_sub = submission_for(world, "bob")
    submission_for(world, "carol", assignment=world.sketch)
    sam = auth.token("sam@uni.test")
    auth.login("sam@uni.test")
    save_mark(client, alice_sub, "44", "Well structured.")
    save_mark(client, bob_sub, "30", "")

    response = post_form(client, ids.essay, "release", confirm="y")
    assert response.status_code == 303
    assert "Releasing grades now" in client.get(response.headers["Location"]).get_data(
        as_text=True)
    run_jobs()

    api, grade_box = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 44 and api["grade"]["feedback"] == "Well structured."
    assert "44.0 / 50" in grade_box and "Well structured." in grade_box
    [event] = events_on(f"submission.{alice_sub}", "grade")
    assert event.payload == {"submission_id": alice_sub, "score": 44.0, "max_score": 50,
                             "feedback": "Well structured."}
    assert f"user.{ids.alice}" in event.topic_names
    flashes = db.session.execute(db.select(FlashMessage)).scalars().all()
    assert sorted(f.user.email for f in flashes) == ["alice@uni.test", "bob@uni.test",
                                                      "sam@uni.test"]
    assert {f.text for f in flashes} == {"Grades for CS101: Essay are out"}
    links = {f.user.email: (f.link_url, f.link_text) for f in flashes}
    assert links["alice@uni.test"] == (f"/submissions/{alice_sub}", "See your grade")
    assert links["sam@uni.test"] == (f"/staff/assignments/{ids.essay}", "Open marking")
    [announcement] = events_on(f"assignment.{ids.essay}", "flash")
    assert announcement.payload["text"] == "Grades for CS101: Essay are out"
    assert sorted(m["To"] for m in smtp.messages) == ["alice@uni.test", "bob@uni.test"]
    alice_mail = next(m for m in smtp.messages if m["To"] == "alice@uni.test")
    assert "Your grade: 44 / 50" in alice_mail.get_content()
    assert "Well structured." in alice_mail.get_content()

    logout(client)
    auth.login("sam@uni.test")
    again = post_form(client, ids.essay, "release", confirm="y")
    assert "already released" in client.get(again.headers["Location"]).get_data(as_text=True)
    api_again = client.post(f"/api/v1/assignments/{ids.essay}/release",
                            headers=sam)
    assert api_again.status_code == 200 and api_again.get_json()["state"] == "released"
    run_jobs()
    assert len(smtp.messages) == 2
    assert db.session.query(FlashMessage).count() == 3
    assert len(events_on(f"submission.{alice_sub}", "grade")) == 1
    assert len(events_on(f"assignment.{ids.essay}", "flash")) == 1
    page = marking_page(client, ids.essay).get_data(as_text=True)
    assert re.search(r'<span id="released-count">2</span> released', page)


def test_a_grade_email_the_mail_server_refuses_for_good_is_not_retried(
        client, auth, world, ids, smtp, caplog):
    alice_sub = submission_for(world, "alice")
    bob_sub = submission_for(world, "bob")
    smtp.refuse("alice@uni.test", "550 5.1.1 no such mailbox")
    auth.login("sam@uni.test")
    save_mark(client, alice_sub, "44")
    save_mark(client, bob_sub, "30")
    post_form(client, ids.essay, "release", confirm="y")
    run_jobs()

    assert [m["To"] for m in smtp.messages] == ["bob@uni.test"]
    assert smtp.refused == ["alice@uni.test"]
    job = Job.fetch(grade_email_job_id(alice_sub), connection=get_redis())
    assert job.get_status() == JobStatus.FAILED
    assert f"event=grade_email_refused submission_id={alice_sub}" in caplog.text
    # The grade itself reached her all the same.
    api, grade_box = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 44 and "44.0 / 50" in grade_box


def test_release_goes_ahead_of_a_deadline_backlog(client, auth, world, ids):
    alice_sub = submission_for(world, "alice")
    headers = auth.token("bob@uni.test")
    for n in range(3):  # another deadline's uploads, queued before the release
        answer = upload_api(client, headers, ids.essay, f"late essay {n}\n".encode(), f"e{n}.txt")
        assert answer.status_code == 202, answer.get_json()
    auth.login("sam@uni.test")
    save_mark(client, alice_sub, "41", "")
    post_form(client, ids.essay, "release", confirm="y")

    # One worker serving every queue, as the Procfile's, takes a single job.
    SimpleWorker(QUEUES, connection=get_redis()).work(burst=True, max_jobs=1,
                                                      logging_level="WARNING")
    db.session.remove()
    api, _ = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 41
    assert Queue("scan", connection=get_redis()).count == 3


def test_grade_changed_after_release_reaches_the_student_without_a_second_email(
        client, auth, world, ids, smtp):
    alice_sub = submission_for(world, "alice")
    headers = auth.token("sam@uni.test")
    client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers,
               json={"score": 35, "feedback": "Good"})
    client.post(f"/api/v1/assignments/{ids.essay}/release", headers=headers)
    run_jobs()
    assert len(smtp.messages) == 1

    changed = client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers,
                         json={"score": 38, "feedback": "Good; regraded question 2"})
    assert changed.get_json()["released"] is True
    run_jobs()
    grade_events = events_on(f"submission.{alice_sub}", "grade")
    assert [e.payload["score"] for e in grade_events] == [35.0, 38.0]
    assert grade_events[-1].payload["feedback"] == "Good; regraded question 2"
    api, grade_box = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 38 and "38.0 / 50" in grade_box
    assert len(smtp.messages) == 1
    assert db.session.query(FlashMessage).filter_by(user_id=ids.alice).count() == 1


def test_grade_first_given_after_release_is_announced_and_emailed_once(
        client, auth, world, ids, smtp):
    alice_sub = submission_for(world, "alice")
    bob_sub = submission_for(world, "bob")
    headers = auth.token("sam@uni.test")
    client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers, json={"score": 40})
    client.post(f"/api/v1/assignments/{ids.essay}/release", headers=headers)
    run_jobs()
    assert [m["To"] for m in smtp.messages] == ["alice@uni.test"]
    bob_flash = db.session.execute(db.select(FlashMessage).filter_by(user_id=ids.bob)).scalar_one()
    assert bob_flash.link_url == f"/assignments/{ids.essay}"

    client.put(f"/api/v1/submissions/{bob_sub}/grade", headers=headers,
               json={"score": 25, "feedback": "Marked late, sorry"})
    client.put(f"/api/v1/submissions/{bob_sub}/grade", headers=headers,
               json={"score": 26, "feedback": "Marked late, sorry"})
    run_jobs()
    assert sorted(m["To"] for m in smtp.messages) == ["alice@uni.test", "bob@uni.test"]
    assert [e.payload["score"] for e in events_on(f"submission.{bob_sub}", "grade")] == [25, 26]
    api, _ = student_view(client, auth, "bob@uni.test", bob_sub)
    assert api["grade"]["score"] == 26


def test_marking_progress_goes_to_the_staff_topic_only(client, auth, world, ids):
    alice_sub = submission_for(world, "alice")
    bob_sub = submission_for(world, "bob")
    headers = auth.token("sam@uni.test")
    client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers, json={"score": 20})
    client.put(f"/api/v1/submissions/{bob_sub}/grade", headers=headers, json={"score": 22})
    progress = [e.payload["progress"] for e in events_on(f"assignment.{ids.essay}.staff")]
    assert progress == [{"marked": 1, "total": 2, "released": 0},
                        {"marked": 2, "total": 2, "released": 0}]
    db.session.remove()
    student_topics = {f"assignment.{ids.essay}", f"submission.{alice_sub}",
                      f"submission.{bob_sub}", f"user.{ids.alice}",
                      f"user.{ids.bob}"}
    topics = set(db.session.execute(db.select(EventTopic.topic)).scalars())
    assert not topics & student_topics
    client.post(f"/api/v1/assignments/{ids.essay}/release", headers=headers)
    run_jobs()
    last = events_on(f"assignment.{ids.essay}.staff")[-1].payload
    assert last["progress"] == {"marked": 2, "total": 2, "released": 2}
    assert last["released_at"] is not None


def test_release_time_is_entered_in_the_course_time_zone_and_shown_in_utc_too(
        client, auth, world, ids):
    auth.login("sam@uni.test")
    response = post_form(client, ids.essay, "release/schedule",
                         release_at="2030-07-01T10:00")
    assert response.status_code == 303
    assignment = release_state(ids.essay)
    assert assignment.release_at == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)
    assert scheduled_job_ids() == [assignment.release_job_id]
    page = marking_page(client, ids.essay).get_data(as_text=True)
    assert "Release scheduled for Mon 01 Jul 2030, 10:00 BST" in page
    assert "2030-07-01 09:00:00 UTC" in page
    assert 'value="2030-07-01T10:00"' in page
    assert "Europe/London time" in page

    gap = post_form(client, ids.essay, "release/schedule", release_at="2030-03-31T01:30")
    assert gap.status_code == 400
    assert "does not exist in Europe/London" in gap.get_data(as_text=True)
    past = post_form(client, ids.essay, "release/schedule", release_at="2020-01-01T10:00")
    assert past.status_code == 400 and "in the future" in past.get_data(as_text=True)
    assert release_state(ids.essay).release_at == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)


def test_changing_or_cancelling_a_schedule_replaces_its_job(client, auth, world, ids):
    headers = auth.token("sam@uni.test")
    url = f"/api/v1/assignments/{ids.essay}/release"
    first = client.post(url, headers=headers, json={"at": "2030-01-10T09:00:00Z"})
    assert first.status_code == 202
    assert first.get_json() == {"assignment_id": ids.essay, "state": "scheduled",
                                "release_at": "2030-01-10T09:00:00Z", "released_at": None}
    first_job = release_state(ids.essay).release_job_id
    moved = client.post(url, headers=headers, json={"at": "2030-01-11T09:00:00+01:00"})
    assert moved.get_json()["release_at"] == "2030-01-11T08:00:00Z"
    second_job = release_state(ids.essay).release_job_id
    assert scheduled_job_ids() == [second_job] and second_job != first_job

    cancelled = client.delete(url, headers=headers)
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "unscheduled"
    assert scheduled_job_ids() == []
    assignment = release_state(ids.essay)
    assert assignment.release_at is None and assignment.release_job_id is None

    naive = client.post(url, headers=headers, json={"at": "2030-01-10T09:00:00"})
    assert naive.status_code == 400 and "UTC offset" in naive.get_json()["error"]["message"]
    past = client.post(url, headers=headers, json={"at": "2001-01-10T09:00:00Z"})
    assert past.status_code == 400
    assert client.post(url, headers=headers, json={"at": 5}).status_code == 400
    assert release_state(ids.essay).release_at is None


def test_a_stale_release_job_that_outlived_its_cancel_does_nothing(
        client, auth, world, ids, smtp):
    alice_sub = submission_for(world, "alice")
    headers = auth.token("sam@uni.test")
    client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers, json={"score": 40})
    url = f"/api/v1/assignments/{ids.essay}/release"
    client.post(url, headers=headers, json={"at": (utcnow() + timedelta(hours=1)).isoformat()})
    moved_away = release_state(ids.essay).release_job_id
    client.post(url, headers=headers, json={"at": (utcnow() + timedelta(hours=2)).isoformat()})
    cancelled = release_state(ids.essay).release_job_id
    client.delete(url, headers=headers)
    # As if Redis had kept both jobs and a scheduler pushed them to the queue.
    grades = Queue("grades", connection=get_redis())
    for job_id in (moved_away, cancelled):
        grades.enqueue("jobs.grades.release", ids.essay, job_id=job_id)
    run_jobs()
    assert release_state(ids.essay).released_at is None
    api, _ = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"] is None
    assert smtp.messages == [] and db.session.query(FlashMessage).count() == 0


def test_release_now_replaces_a_pending_schedule(client, auth, world, ids):
    headers = auth.token("sam@uni.test")
    url = f"/api/v1/assignments/{ids.essay}/release"
    client.post(url, headers=headers, json={"at": "2030-01-10T09:00:00Z"})
    now = client.post(url, headers=headers)
    assert now.status_code == 202 and now.get_json()["state"] == "releasing"
    assert scheduled_job_ids() == []
    run_jobs()
    assert release_state(ids.essay).released_at is not None
    assert client.delete(url, headers=headers).status_code == 409
    late_schedule = client.post(url, headers=headers, json={"at": "2030-01-10T09:00:00Z"})
    assert late_schedule.status_code == 409


def test_staff_find_marking_from_the_nav_and_their_assignment_list(client, auth, world, ids):
    auth.login("sam@uni.test")
    home = client.get("/").get_data(as_text=True)
    assert 'id="nav-marking"' in home
    assert f'href="/staff/assignments/{ids.essay}" class="marking-link"' in home
    staff_list = client.get("/staff/").get_data(as_text=True)
    assert f'href="/staff/assignments/{ids.essay}"' in staff_list
    assert f'/staff/assignments/{ids.sketch}"' not in staff_list
    logout(client)
    auth.login("alice@uni.test")
    home = client.get("/").get_data(as_text=True)
    assert 'id="nav-marking"' not in home and "marking-link" not in home
    assert client.get("/staff/").status_code == 404


def test_openapi_document_describes_marking_and_release(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert set(paths["/submissions/{submission_id}/grade"]) == {"put"}
    assert set(paths["/assignments/{assignment_id}/release"]) == {"post", "delete"}


def test_only_the_courses_staff_may_follow_the_marking_topic(client, auth, world, ids):
    topic = f"/events?topic=assignment.{ids.essay}.staff"
    for email in ("alice@uni.test", "tess@uni.test"):
        assert client.get(topic, headers=auth.token(email)).status_code == 403
    stream = client.get(topic, headers=auth.token("sam@uni.test"), buffered=False)
    try:
        assert stream.status_code == 200
        assert stream.mimetype == "text/event-stream"
    finally:
        stream.close()


def test_reconcile_releases_a_schedule_left_overdue_by_a_stopped_scheduler(
        client, auth, world, ids, smtp):
    from jobs.maintenance import reconcile

    alice_sub = submission_for(world, "alice")
    headers = auth.token("sam@uni.test")
    client.put(f"/api/v1/submissions/{alice_sub}/grade", headers=headers, json={"score": 40})
    client.post(f"/api/v1/assignments/{ids.essay}/release", headers=headers,
                json={"at": (utcnow() + timedelta(hours=1)).isoformat()})
    stuck = release_state(ids.essay).release_job_id
    scheduler = Scheduler(queue_name="grades", connection=get_redis())

    def due_ago(delay):
        # As if the release time had come and gone with no scheduler process running.
        due = utcnow() - delay
        db.session.execute(update(Assignment).where(Assignment.id == ids.essay)
                           .values(release_at=due))
        db.session.commit()
        get_redis().zadd(scheduler.scheduled_jobs_key, {stuck: due.timestamp()})

    due_ago(timedelta(seconds=10))  # a running scheduler moves it any moment: leave it
    reconcile()
    assert scheduled_job_ids() == [stuck]
    due_ago(timedelta(minutes=2))
    reconcile()
    assert scheduled_job_ids() == []
    run_jobs(["grades", "email"])
    api, _ = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 40
    assert [m["To"] for m in smtp.messages] == ["alice@uni.test"]


def test_a_mark_saved_from_a_page_drawn_before_a_resubmission_is_refused(client, auth, world,
                                                                         ids):
    earlier = submission_for(world, "alice", ago=timedelta(hours=2))
    auth.login("sam@uni.test")
    page = marking_page(client, ids.essay).get_data(as_text=True)
    latest = submission_for(world, "alice", ago=timedelta(minutes=1))
    response = client.post(f"/staff/submissions/{earlier}/grade", data={
        "csrf_token": csrf_from(page), f"s{earlier}-score": "30"}, follow_redirects=True)
    assert "Alice has a newer submission; mark that one." in response.get_data(as_text=True)
    assert f'name="s{latest}-score"' in response.get_data(as_text=True)
    assert db.session.query(Grade).count() == 0


def test_marking_forms_without_a_csrf_token_change_nothing(client, auth, world, ids):
    submission_id = submission_for(world, "alice")
    auth.login("sam@uni.test")
    refused = client.post(f"/staff/submissions/{submission_id}/grade",
                          data={f"s{submission_id}-score": "20"})
    assert refused.status_code == 400
    for action in ("release", "release/schedule"):
        client.post(f"/staff/assignments/{ids.essay}/{action}",
                    data={"release_at": "2030-07-01T10:00"})
    assert db.session.query(Grade).count() == 0
    assignment = release_state(ids.essay)
    assert assignment.release_at is None and assignment.released_at is None
    assert Queue("grades", connection=get_redis()).count == 0 and scheduled_job_ids() == []
