import io
import json
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from flask import url_for
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import func

from app.events import hub as event_hub
from app.events.publisher import emit
from app.events.topics import ADMIN_DASHBOARD as TOPIC
from app.extensions import db, get_redis
from app.models import (
    Assignment,
    Event,
    EventTopic,
    ExternalRecord,
    FlashMessage,
    StepRun,
    Submission,
    User,
    utcnow,
)
from jobs.maintenance import reconcile
from tests.conftest import Auth, Client, csrf_from, run_jobs
from tests.e2e.live import client_for, follow, open_stream
from tests.helpers import wait_until
from tests.samples import EICAR
from tests.services import free_port

HEARTBEAT = 0.2
# Values for the variable parts of admin URLs; access is refused before they are looked up.
URL_ARGUMENTS = {"job_id": "no-such-job", "step_id": 1, "export_type": "csv"}


def admin_of(app):
    (admin,) = app.extensions["admin"]
    return admin


def admin_rules(app):
    """Every URL rule of every registered admin view, static files aside."""
    rules = []
    for view in admin_of(app)._views:
        own = [rule for rule in app.url_map.iter_rules()
               if rule.endpoint.startswith(f"{view.endpoint}.")
               and rule.endpoint != f"{view.endpoint}.static"]
        assert own, f"admin view {view.endpoint} has no URL"
        rules.extend(own)
    return rules


def requests_to_try(app):
    with app.test_request_context():
        for rule in admin_rules(app):
            url = url_for(rule.endpoint, **{arg: URL_ARGUMENTS[arg] for arg in rule.arguments})
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield method, url


def token_for(client, logged_in):
    page = client.get("/" if logged_in else "/login").get_data(as_text=True)
    return csrf_from(page)


def essay_id(world):
    # The primary key of the fixture's assignment, even once its session is gone.
    return sa.inspect(world.essay).identity[0]


def upload(app, world, content=b"My essay about queues and workers.\n", name="essay.txt",
           who="alice@uni.test"):
    client = Client(app, app.response_class)
    headers = Auth(client).token(who)
    response = client.post(
        f"/api/v1/assignments/{essay_id(world)}/submissions",
        data={"file": (io.BytesIO(content), name)}, headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def id_of(record):
    # The primary key, even once the test's session has let go of the object.
    return sa.inspect(record).identity[0]


@pytest.fixture
def live(app):
    app.config.update(SSE_HEARTBEAT_SECONDS=HEARTBEAT, SSE_GAP_WAIT_SECONDS=0.5)
    yield
    event_hub.stop_hub()


def follow_live(app, name, topic):
    """An open event stream known to be live: a probe sent now has come through."""
    reader = follow(client_for(app, name), topic)
    emit("probe", {"probe": topic}, [topic])
    db.session.commit()
    assert [frame.data for frame in reader.events(1, timeout=4)] == [{"probe": topic}]
    return reader


@pytest.fixture
def admin_client(client, auth, world):
    assert auth.login("root@uni.test").status_code == 302
    return client


class RecordsSystem:
    """A stand-in for the student-records system: answers each signed POST with a record id."""

    def __init__(self):
        self.received = []
        records = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                records.received.append(json.loads(body))
                answer = json.dumps({"id": f"REC-{len(records.received)}"}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/records"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass(frozen=True)
class FailedStep:
    submission_id: int
    step_id: int
    job_id: str


def failed_admin_sync(app, world):
    """A submission whose records-system step gave up: the records system was unreachable."""
    app.config["ADMIN_SYNC_URL"] = f"http://127.0.0.1:{free_port()}/records"
    app.config["ADMIN_SYNC_SECRET"] = "records-secret"
    submission_id = upload(app, world)
    run_jobs()
    submission = db.session.get(Submission, submission_id)
    step = submission.step("admin_sync")
    assert (submission.status, step.status) == ("needs_attention", "failed")
    assert "ConnectionError" in step.last_error
    return FailedStep(submission_id, step.id, step.job_id)


@pytest.mark.parametrize("who", ["sam@uni.test", "alice@uni.test"])
def test_every_admin_url_is_refused_to_staff_and_students(app, client, auth, world, who):
    auth.login(who)
    token = token_for(client, logged_in=True)
    tried = 0
    for method, url in requests_to_try(app):
        response = client.open(url, method=method, data={"csrf_token": token})
        assert response.status_code == 403, (method, url, response.status_code)
        assert "Forbidden" in response.get_data(as_text=True)
        tried += 1
    assert tried > 60


def test_every_admin_url_sends_anonymous_visitors_to_login(app, client, world):
    token = token_for(client, logged_in=False)
    for method, url in requests_to_try(app):
        response = client.open(url, method=method, data={"csrf_token": token})
        assert response.status_code == 302, (method, url, response.status_code)
        location = response.headers["Location"]
        assert location.startswith("/login?next="), (method, url, location)
        assert url.split("?")[0] in location.replace("%2F", "/")


def test_admin_can_open_every_admin_page(app, admin_client, world):
    upload(app, world)
    run_jobs()
    pages = []
    with app.test_request_context():
        for view in admin_of(app)._views:
            if not hasattr(view, "index_view"):
                pages.append(url_for(f"{view.endpoint}.index"))
                continue
            pages.append(url_for(f"{view.endpoint}.index_view"))
            if view.can_create:
                pages.append(url_for(f"{view.endpoint}.create_view"))
            first = db.session.execute(db.select(view.model).limit(1)).scalar_one_or_none()
            if first is not None:
                pages.append(url_for(f"{view.endpoint}.details_view",
                                     id=view.get_pk_value(first)))
                if view.can_edit:
                    pages.append(url_for(f"{view.endpoint}.edit_view",
                                         id=view.get_pk_value(first)))
    # Every view's list, and a record's pages for the views that have one (not every kind of
    # record exists in the fixture).
    assert len(pages) >= len(admin_of(app)._views) + 10 >= 20
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, (page, response.status_code)


def test_admin_form_without_csrf_token_is_refused(app, admin_client):
    response = admin_client.post("/admin/user/new/", data={
        "email": "mallory@uni.test", "role": "admin", "active": "y", "password": "x" * 12})
    assert response.status_code == 400
    assert db.session.execute(
        db.select(User).filter_by(email="mallory@uni.test")).scalar_one_or_none() is None


def test_admin_creates_user_with_hashed_password_and_never_shows_hashes(app, admin_client):
    form = admin_client.get("/admin/user/new/").get_data(as_text=True)
    assert 'name="password_hash"' not in form
    response = admin_client.post("/admin/user/new/", data={
        "csrf_token": csrf_from(form), "email": " Dana@Uni.test ", "name": "Dana",
        "role": "staff", "active": "y", "password": "a long enough password"})
    assert response.status_code == 302, response.get_data(as_text=True)
    dana = db.session.execute(db.select(User).filter_by(email="dana@uni.test")).scalar_one()
    assert dana.role == "staff" and dana.check_password("a long enough password")

    listing = admin_client.get("/admin/user/").get_data(as_text=True)
    details = admin_client.get(f"/admin/user/details/?id={dana.id}").get_data(as_text=True)
    for page in (listing, details):
        assert "dana@uni.test" in page
        assert dana.password_hash not in page
        assert "scrypt:" not in page and "pbkdf2:" not in page

    edit = admin_client.get(f"/admin/user/edit/?id={dana.id}").get_data(as_text=True)
    response = admin_client.post(f"/admin/user/edit/?id={dana.id}", data={
        "csrf_token": csrf_from(edit), "email": "dana@uni.test", "name": "Dana D",
        "role": "staff", "active": "y", "password": ""})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(User, dana.id).check_password("a long enough password")
    other = Client(app, app.response_class)
    assert Auth(other).login("dana@uni.test", "a long enough password").status_code == 302


def test_admin_cannot_create_user_without_password(app, admin_client):
    form = admin_client.get("/admin/user/new/").get_data(as_text=True)
    response = admin_client.post("/admin/user/new/", data={
        "csrf_token": csrf_from(form), "email": "nopass@uni.test", "role": "student",
        "active": "y", "password": ""})
    assert "Give the new user a password" in response.get_data(as_text=True)
    assert db.session.execute(
        db.select(User).filter_by(email="nopass@uni.test")).scalar_one_or_none() is None


def test_admin_edits_assignment_dates_in_the_course_time_zone_and_schedules_grade_release(
        app, admin_client, world):
    essay = world.essay
    edit = admin_client.get(f"/admin/assignment/edit/?id={essay.id}").get_data(as_text=True)
    release = (utcnow() + timedelta(days=3)).replace(second=0, microsecond=0)
    # CS101 keeps London time: 17:00 on 1 May 2031 is 16:00 UTC (summer time).
    response = admin_client.post(f"/admin/assignment/edit/?id={essay.id}", data={
        "csrf_token": csrf_from(edit), "course": str(world.cs.id), "title": "Essay",
        "description": "", "due_at": "2031-05-01T17:00", "cutoff_at": "2031-05-02 17:00",
        "allowed_types": "pdf,txt", "max_size_mb": "3", "max_score": "40",
        "grade_release": f"{release.astimezone(world.cs.tz):%Y-%m-%dT%H:%M}"})
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.expire_all()
    essay = db.session.get(Assignment, essay.id)
    assert essay.due_at.isoformat() == "2031-05-01T16:00:00+00:00"
    assert essay.cutoff_at.isoformat() == "2031-05-02T16:00:00+00:00"
    assert (essay.allowed_types, essay.max_size_mb, essay.max_score) == ("pdf,txt", 3, 40)
    assert essay.release_at == release and essay.release_job_id
    listing = admin_client.get("/admin/assignment/").get_data(as_text=True)
    assert "Thu 01 May 2031, 17:00 BST" in listing
    edit = admin_client.get(f"/admin/assignment/edit/?id={essay.id}").get_data(as_text=True)
    due = re.search(r'<input[^>]*id="due_at"[^>]*>', edit).group(0)
    assert 'type="datetime-local"' in due and 'value="2031-05-01T17:00"' in due
    assert "datetimepicker" not in due


def test_admin_assignment_cutoff_before_due_is_refused(app, admin_client, world):
    essay = world.essay
    edit = admin_client.get(f"/admin/assignment/edit/?id={essay.id}").get_data(as_text=True)
    response = admin_client.post(f"/admin/assignment/edit/?id={essay.id}", data={
        "csrf_token": csrf_from(edit), "course": str(world.cs.id), "title": "Essay",
        "due_at": "2031-05-02T17:00", "cutoff_at": "2031-05-01T17:00",
        "allowed_types": "pdf", "max_size_mb": "3", "max_score": "40", "grade_release": ""})
    assert "The cut-off cannot be before the due time" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Assignment, essay.id).due_at.year != 2031


def test_admin_lists_submissions_and_sees_steps_and_full_event_timeline(app, admin_client,
                                                                        world):
    submission_id = upload(app, world, name="timeline.txt")
    run_jobs()
    listing = admin_client.get("/admin/submission/?search=timeline").get_data(as_text=True)
    assert "timeline.txt" in listing and "alice@uni.test" in listing
    completed = admin_client.get("/admin/submission/?flt0_0=completed").get_data(as_text=True)
    assert "timeline.txt" in completed
    rejected = admin_client.get("/admin/submission/?flt0_0=rejected").get_data(as_text=True)
    assert "timeline.txt" not in rejected

    page = admin_client.get(f"/admin/submission/details/?id={submission_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for step in ("scan", "store", "plagiarism", "admin_sync", "email", "thumbnail"):
        assert f'id="step-{step}"' in html
    assert "No threats found" in html
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id).order_by(Event.id)
    ).scalars().all()
    assert len(events) > 10
    shown = [int(n) for n in re.findall(r"<td>#(\d+)</td>", html)]
    assert shown == [event.id for event in events]
    assert "All checks finished" in html


@pytest.mark.slow
def test_submission_page_shows_what_outside_systems_acknowledged(app, admin_client, world):
    quiet = upload(app, world)
    checked = upload(app, world, content=b"A second essay.\n")
    db.session.add_all([
        ExternalRecord(submission_id=checked, service="turnitin", remote_id="tii-42",
                       state="complete", data={"overall": 3, "unconfirmed_creates": 2}),
        ExternalRecord(submission_id=checked, service="admin_sync", remote_id="REC-7",
                       state="sent"),
    ])
    db.session.commit()

    page = admin_client.get(f"/admin/submission/details/?id={checked}").get_data(as_text=True)
    table = re.search(r'<table[^>]*id="outside-records".*?<tbody>(.*?)</tbody>', page,
                      re.S).group(1)
    rows = [re.sub(r"<[^>]+>", "|", row) for row in re.findall(r"<tr>.*?</tr>", table, re.S)]
    assert [" ".join(re.sub(r"\|+", " ", row).split()) for row in rows] == [
        "Student records REC-7 sent",
        "Turnitin tii-42 complete Turnitin may also hold 2 empty submissions for this work, "
        "from tries whose answer never arrived",
    ]
    quiet_page = admin_client.get(f"/admin/submission/details/?id={quiet}").get_data(
        as_text=True)
    assert "Nothing sent to an outside system yet." in quiet_page


def test_requeue_on_submission_page_brings_failed_step_to_completion(app, admin_client, world):
    failed = failed_admin_sync(app, world)
    page = admin_client.get(f"/admin/submission/details/?id={failed.submission_id}").get_data(
        as_text=True)
    assert "Requeue" in page and "ConnectionError" in page

    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        response = admin_client.post(f"/admin/submission/requeue/{failed.step_id}",
                                     data={"csrf_token": csrf_from(page)})
        assert response.status_code == 302
        assert response.headers["Location"].endswith(
            f"/admin/submission/details/?id={failed.submission_id}")
        run_jobs()

    assert [r["submission_id"] for r in records.received] == [failed.submission_id]
    submission = db.session.get(Submission, failed.submission_id)
    assert submission.status == "completed"
    assert submission.step("admin_sync").status == "succeeded"
    assert "REC-1" in submission.step("admin_sync").detail
    assert FailedJobRegistry("external", connection=get_redis()).count == 0
    page = admin_client.get(f"/admin/submission/details/?id={failed.submission_id}").get_data(
        as_text=True)
    assert "A step was requeued" in page and "Requeue</button>" not in page


def test_requeue_of_every_failed_step_of_the_selected_submissions_at_once(
        app, admin_client, world):
    first = failed_admin_sync(app, world)
    second = failed_admin_sync(app, world)
    rejected = upload(app, world, content=EICAR, name="eicar.txt")
    run_jobs()
    assert db.session.get(Submission, rejected).status == "rejected"
    page = admin_client.get("/admin/submission/").get_data(as_text=True)
    assert "Requeue failed steps" in page
    assert f'value="{first.submission_id}"' in page and f'value="{second.submission_id}"' in page

    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        # A whole page selected: the rejected file's failed scan is left as it is.
        response = admin_client.post("/admin/submission/action/", data={
            "csrf_token": csrf_from(page), "action": "requeue_failed",
            "rowid": [str(first.submission_id), str(second.submission_id), str(rejected)]})
        assert response.status_code == 302
        listing = admin_client.get(response.headers["Location"]).get_data(as_text=True)
        assert "Requeued 2 failed steps of 2 submissions." in listing
        run_jobs()

    assert sorted(r["submission_id"] for r in records.received) == sorted(
        [first.submission_id, second.submission_id])
    for failed in (first, second):
        assert db.session.get(Submission, failed.submission_id).status == "completed"
    assert FailedJobRegistry("external", connection=get_redis()).count == 0
    rejection = db.session.get(Submission, rejected)
    assert rejection.status == "rejected"
    assert rejection.step("scan").status == "failed"
    assert "EICAR" in rejection.step("scan").detail

    again = admin_client.post("/admin/submission/action/", data={
        "csrf_token": csrf_from(page), "action": "requeue_failed",
        "rowid": [str(first.submission_id), str(rejected)]})
    assert "None of the selected submissions has a failed step that can run again." in (
        admin_client.get(again.headers["Location"]).get_data(as_text=True))


def test_requeue_of_failed_steps_while_redis_is_down_starts_them_once_it_is_back(
        app, admin_client, world):
    failed = failed_admin_sync(app, world)
    page = admin_client.get("/admin/submission/").get_data(as_text=True)
    working_redis = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("submissions_redis").close()
    try:
        response = admin_client.post("/admin/submission/action/", data={
            "csrf_token": csrf_from(page), "action": "requeue_failed",
            "rowid": [str(failed.submission_id)]})
        assert response.status_code == 302
    finally:
        app.config["REDIS_URL"] = working_redis
    listing = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Requeued 1 failed step of 1 submission." in listing
    assert ("The queue is unreachable right now: 1 step will start within a minute of it "
            "coming back.") in listing
    db.session.remove()
    assert db.session.get(StepRun, failed.step_id).status == "queued"

    app.config["RECONCILE_GRACE_SECONDS"] = 0
    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        reconcile()
        run_jobs()
    assert db.session.get(Submission, failed.submission_id).status == "completed"
    assert len(records.received) == 1


@pytest.mark.slow
def test_requeue_on_queues_page_brings_failed_step_to_completion(app, admin_client, world):
    failed = failed_admin_sync(app, world)
    page = admin_client.get("/admin/queues/").get_data(as_text=True)
    assert f'id="failed-{failed.job_id}"' in page
    assert "ConnectionError" in page
    assert re.search(r'id="queue-external" data-depth="0" data-failed="1"', page)

    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        response = admin_client.post(f"/admin/queues/failed/{failed.job_id}/requeue",
                                     data={"csrf_token": csrf_from(page)})
        assert response.status_code == 302
        page = admin_client.get("/admin/queues/").get_data(as_text=True)
        assert f"Requeued step admin_sync of submission {failed.submission_id}" in page
        assert 'id="queue-external" data-depth="1" data-failed="0"' in page
        run_jobs()

    assert len(records.received) == 1
    assert db.session.get(Submission, failed.submission_id).status == "completed"
    assert "No failed jobs." in admin_client.get("/admin/queues/").get_data(as_text=True)


@pytest.mark.slow
def test_deleting_failed_job_leaves_step_failed_and_visible(app, admin_client, world):
    failed = failed_admin_sync(app, world)
    page = admin_client.get("/admin/queues/").get_data(as_text=True)
    response = admin_client.post(f"/admin/queues/failed/{failed.job_id}/delete",
                                 data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    page = admin_client.get("/admin/queues/").get_data(as_text=True)
    assert "No failed jobs." in page
    db.session.expire_all()
    assert db.session.get(StepRun, failed.step_id).status == "failed"
    details = admin_client.get(f"/admin/submission/details/?id={failed.submission_id}").get_data(
        as_text=True)
    assert "Requeue</button>" in details

    again = admin_client.post(f"/admin/queues/failed/{failed.job_id}/requeue",
                              data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "That job is gone already" in again.get_data(as_text=True)


def test_queues_page_shows_waiting_jobs_workers_and_scheduled_jobs(app, admin_client, world):
    from jobs.maintenance import schedule_periodic, scheduler_for

    upload(app, world)
    schedule_periodic(scheduler_for())
    page = admin_client.get("/admin/queues/").get_data(as_text=True)
    assert 'id="queue-scan" data-depth="1"' in page
    assert "No worker is running" in page
    assert "periodic-reconcile" in page and "periodic-rollup" in page
    assert Queue("scan", connection=get_redis()).count == 1


def test_dashboard_shows_rolled_up_figures_and_publishes_them_to_admins(app, admin_client,
                                                                        world):
    before = admin_client.get("/admin/").get_data(as_text=True)
    assert "No figures yet" in before
    assert f'data-topic="{TOPIC}"' in before

    for n in range(3):
        upload(app, world, content=f"essay number {n}\n".encode(), name=f"e{n}.txt")
    Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
    run_jobs(["maintenance"])
    page = admin_client.get("/admin/").get_data(as_text=True)
    assert '<div class="h3 mb-0" id="stat-intake_last_hour">3</div>' in page
    assert '<div class="h3 mb-0" id="stat-backlog">3</div>' in page
    assert re.search(r"<td>scan</td><td>3</td>", page)

    run_jobs()
    upload(app, world, content=b"one more\n", name="late.txt")
    Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
    run_jobs(["maintenance"])
    page = admin_client.get("/admin/").get_data(as_text=True)
    # Counted incrementally, yet nothing is counted twice.
    assert '<div class="h3 mb-0" id="stat-intake_last_hour">4</div>' in page
    assert re.search(r"<td>Virus scan</td><td>3</td>", page)

    published = db.session.execute(
        db.select(Event).filter_by(type="stats").order_by(Event.id)).scalars().all()
    assert len(published) == 2
    assert published[-1].topic_names == [TOPIC]
    assert sum(point["count"] for point in published[-1].payload["intake"]) == 4
    assert published[-1].payload["backlog"] == 1


def test_only_the_newest_dashboard_roll_ups_stay_in_the_event_trail(app, world):
    app.config["DASHBOARD_EVENTS_KEPT"] = 2
    upload(app, world)
    run_jobs()
    trail = db.session.execute(db.select(func.count()).select_from(Event)).scalar_one()
    for _ in range(4):
        Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
        run_jobs(["maintenance"])
    published = db.session.execute(
        db.select(Event).filter_by(type="stats").order_by(Event.id)).scalars().all()
    assert len(published) == 2
    assert all(event.topic_names == [TOPIC] for event in published)
    everything = db.session.execute(db.select(func.count()).select_from(Event)).scalar_one()
    assert everything == trail + 2  # the submission's own trail is untouched
    dashboard_rows = db.session.execute(
        db.select(func.count()).select_from(EventTopic).filter_by(topic=TOPIC)).scalar_one()
    assert dashboard_rows == 2


def test_dashboard_figures_arrive_live_on_the_admin_stream(app, world, live):
    reader = follow_live(app, "root", TOPIC)
    try:
        upload(app, world)
        Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
        run_jobs(["maintenance"])
        (frame,) = reader.events(1, timeout=4)
    finally:
        reader.close()
    assert frame.event == "stats"
    assert frame.data["intake_last_hour"] == 1 and frame.data["backlog"] == 1
    stored = db.session.execute(db.select(Event).filter_by(type="stats")).scalar_one()
    assert frame.id == stored.id


def test_students_and_staff_cannot_follow_the_dashboard_stream(app, world, live):
    for name in ("alice", "sam"):
        response = open_stream(client_for(app, name), TOPIC)
        assert response.status_code == 403
        response.close()


def compose(admin_client, **fields):
    form = admin_client.get("/admin/send-flash/").get_data(as_text=True)
    return admin_client.post("/admin/send-flash/", data={
        "csrf_token": csrf_from(form), "level": "info", **fields})


def flash_recipients():
    return sorted(db.session.execute(
        db.select(User.email).join(FlashMessage, FlashMessage.user_id == User.id)
    ).scalars().all())


def test_flash_to_a_course_reaches_every_member_live(app, admin_client, world, live):
    alice = id_of(world.users["alice"])
    reader = follow_live(app, "alice", f"user.{alice}")
    try:
        response = compose(admin_client, audience="course", course_id=str(id_of(world.cs)),
                           text="Lab moved to room 4", level="warning", link_url="/",
                           link_text="My assignments", button_text="Got it", modal="y")
        assert response.status_code == 302
        (frame,) = reader.events(1, timeout=4)
    finally:
        reader.close()
    assert frame.event == "flash"
    assert frame.data["text"] == "Lab moved to room 4"
    assert (frame.data["level"], frame.data["modal"]) == ("warning", True)
    assert flash_recipients() == ["alice@uni.test", "bob@uni.test", "sam@uni.test"]
    page = admin_client.get("/admin/send-flash/").get_data(as_text=True)
    assert "Sent to 3 people." in page


def test_flash_to_one_person_or_everyone_and_bad_requests_send_nothing(app, admin_client,
                                                                      world):
    response = compose(admin_client, audience="user", email="nobody@uni.test", text="Hello")
    assert response.status_code == 400
    assert "No active user has the email" in response.get_data(as_text=True)
    response = compose(admin_client, audience="user", email="carol@uni.test", text="Hi",
                       link_url="javascript:alert(1)")
    assert response.status_code == 400
    assert flash_recipients() == []

    assert compose(admin_client, audience="user", email="Carol@Uni.test",
                   text="Your sketch is late").status_code == 302
    assert flash_recipients() == ["carol@uni.test"]
    assert compose(admin_client, audience="everyone", text="Maintenance tonight",
                   hide_after="30").status_code == 302
    assert len(flash_recipients()) == 1 + 6
    tonight = db.session.execute(
        db.select(FlashMessage).filter_by(text="Maintenance tonight")).scalars().all()
    assert {message.hide_after for message in tonight} == {30}


def test_open_streams_show_in_metrics_and_on_the_dashboard(app, admin_client, world, live):
    def metric():
        text = admin_client.get("/metrics").get_data(as_text=True)
        return int(float(re.search(r"^submissions_open_event_streams (\S+)$", text, re.M).group(1)))

    assert metric() == 0
    alice = id_of(world.users["alice"])
    readers = [follow_live(app, "alice", f"user.{alice}"), follow_live(app, "root", TOPIC)]
    try:
        wait_until(lambda: metric() == 2)
        Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
        run_jobs(["maintenance"])
        page = admin_client.get("/admin/").get_data(as_text=True)
        assert '<div class="h3 mb-0" id="stat-open_streams">2</div>' in page
    finally:
        for reader in readers:
            reader.close()
    wait_until(lambda: metric() == 0)
