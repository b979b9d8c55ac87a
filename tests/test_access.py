"""Who may open what. Every URL that names a submission, its file or thumbnail, a grade, an
assignment, a course, a message, a flash message, a pipeline step or a job is taken from the
app's own URL map, so
a new route is covered the day it is added, and requested as another student of the course,
as a student and as staff of another course, and anonymously. Each is refused without showing
the owner's data or changing anything; each write also needs its CSRF token even from the
rightful user. Live-event topics are checked the same way."""

import io
import uuid
from datetime import timedelta

import pytest
from rq import Queue
from rq_scheduler import Scheduler

from app.extensions import db, get_redis
from app.flash import send_flash
from app.models import (
    Assignment,
    Event,
    Extension,
    FlashMessage,
    Grade,
    Message,
    MessageRead,
    StepRun,
    Submission,
    utcnow,
)
from app.steps import QUEUES
from tests.conftest import Auth, csrf_from, run_jobs

SECRET_TEXT = b"Alice's own argument: queues decouple acceptance from processing. ALICE-7f3a\n"
SECRET_NAME = "alice-private-essay.txt"
SECRET_FEEDBACK = "Feedback for Alice only: strong conclusion"
SECRET_FLASH = "Alice, your extension request was approved"
SECRET_PRIVATE = "Alice to staff only: I was ill the week of the deadline"
MISSING_ID = 987654321
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Uploading into one's own course is not an access question: there is nothing of Alice's in it.
OWN_UPLOADS = {"submissions.assignment", "api.create_submission"}
# A course's and an assignment's conversations are every classmate's: Bob reads them (without
# a word of Alice's private thread in them) and posts to them himself.
COURSE_CONVERSATIONS = {"messages.course", "submissions.post_message", "api.course_messages",
                        "api.post_course_message", "api.assignment_messages",
                        "api.post_assignment_message"}


class Scene:
    """Alice's processed, marked (not yet released) submission and a flash message for her."""

    def __init__(self, app, world):
        owner = app.test_client()
        response = owner.post(
            f"/api/v1/assignments/{world.essay.id}/submissions",
            headers=Auth(owner).token("alice@uni.test"), content_type="multipart/form-data",
            data={"file": (io.BytesIO(SECRET_TEXT), SECRET_NAME)})
        assert response.status_code == 202, response.get_json()
        self.submission = response.get_json()["id"]
        self.sha256 = response.get_json()["sha256"]
        self.essay = world.essay.id
        self.user_ids = {name: user.id for name, user in world.users.items()}
        self.alice = self.user_ids["alice"]
        run_jobs()
        marker = app.test_client()
        graded = marker.put(f"/api/v1/submissions/{self.submission}/grade",
                            headers=Auth(marker).token("sam@uni.test"),
                            json={"score": 44, "feedback": SECRET_FEEDBACK})
        assert graded.status_code == 200, graded.get_json()
        send_flash([self.alice], SECRET_FLASH)
        db.session.commit()
        self.flash = db.session.execute(db.select(FlashMessage.id)).scalar_one()
        self.course = world.cs.id
        private = owner.post(f"/api/v1/courses/{self.course}/private/{self.alice}/messages",
                             headers=Auth(owner).token("alice@uni.test"),
                             json={"body": SECRET_PRIVATE})
        assert private.status_code == 201, private.get_json()
        self.message = private.get_json()["id"]
        self.step, self.job = db.session.execute(
            db.select(StepRun.id, StepRun.job_id).filter_by(submission_id=self.submission,
                                                            name="thumbnail")
        ).one()
        self.secrets = [SECRET_NAME, self.sha256, SECRET_TEXT.decode().strip(), SECRET_FEEDBACK,
                        SECRET_FLASH, SECRET_PRIVATE]

    def ids(self, missing=False):
        """A value for each object-naming URL argument: Alice's object, or one that is not."""
        if missing:
            return {"submission_id": MISSING_ID, "assignment_id": MISSING_ID,
                    "flash_id": MISSING_ID, "step_id": MISSING_ID, "job_id": "no-such-job",
                    "student_id": MISSING_ID, "course_id": MISSING_ID,
                    "message_id": MISSING_ID}
        return {"submission_id": self.submission, "assignment_id": self.essay,
                "flash_id": self.flash, "step_id": self.step, "job_id": self.job,
                "student_id": self.alice, "course_id": self.course, "message_id": self.message}


@pytest.fixture
def scene(app, client, world):
    return Scene(app, world)


def object_routes(app):
    """(endpoint, rule, method) for every route that names one of our objects by its id."""
    routes = []
    for rule in app.url_map.iter_rules():
        if any(arg.endswith("_id") for arg in rule.arguments):
            routes += [(rule.endpoint, rule, method)
                       for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(routes, key=lambda route: (route[1].rule, route[2]))


def url_of(app, rule, scene, missing=False):
    values, ids = {}, scene.ids(missing)
    for arg in rule.arguments:
        if arg in ids:
            values[arg] = ids[arg]
        elif arg == "step_name":
            values[arg] = "thumbnail"
        else:
            pytest.fail(f"{rule.rule}: test_access has no value for <{arg}>; add one")
    return app.url_map.bind("localhost").build(rule.endpoint, values)


def body_for(endpoint, submission_id, student_id=None):
    """What the rightful user would send to this write: form fields, or JSON for the API."""
    future = utcnow() + timedelta(days=3)
    later = future + timedelta(days=1)
    upload = {"file": (io.BytesIO(b"Another essay.\n"), "another.txt")}
    bodies = {
        "submissions.assignment": {"data": {**upload, "idempotency_key": uuid.uuid4().hex}},
        "submissions.requeue": {"data": {}},
        "grades.grade": {"data": {f"s{submission_id}-score": "1",
                                  f"s{submission_id}-feedback": "overwritten"}},
        "grades.release": {"data": {"confirm": "y"}},
        "grades.withdraw": {"data": {}},
        "grades.schedule": {"data": {"release_at": future.strftime("%Y-%m-%dT%H:%M")}},
        "grades.cancel": {"data": {}},
        "grades.grant_extension": {"data": {"student_id": str(student_id),
                                            "due_at": future.strftime("%Y-%m-%dT%H:%M"),
                                            "cutoff_at": later.strftime("%Y-%m-%dT%H:%M")}},
        "grades.withdraw_extension": {"data": {}},
        "submission.requeue": {"data": {}},
        "admin_queues.requeue": {"data": {}},
        "admin_queues.delete": {"data": {}},
        "api.create_submission": {"data": upload},
        "api.put_grade": {"json": {"score": 1, "feedback": "overwritten"}},
        "api.post_release": {"json": {"at": future.isoformat()}},
        "api.delete_release": {},
        "api.acknowledge_flash": {},
        "messages.course": {"data": {"body": "A question for the course"}},
        "submissions.post_message": {"data": {"body": "A question on the essay"}},
        "messages.private": {"data": {"body": "One more thing, privately"}},
        "messages.moderate_message": {"data": {"action": "hide"}},
        "api.post_course_message": {"json": {"body": "A question for the course"}},
        "api.post_assignment_message": {"json": {"body": "A question on the essay"}},
        "api.post_private_message": {"json": {"body": "One more thing, privately"}},
        "api.patch_message": {"json": {"hidden": True}},
        "api.read_message": {},
    }
    if endpoint not in bodies:
        pytest.fail(f"{endpoint} writes: teach test_access.body_for what it takes")
    return dict(bodies[endpoint])


def state():
    """Everything a refused request must leave as it was."""
    db.session.expire_all()
    scheduler = Scheduler(queue_name="grades", connection=get_redis())
    return {
        "submissions": db.session.execute(db.select(
            Submission.id, Submission.status, Submission.filename).order_by(Submission.id)).all(),
        "steps": db.session.execute(db.select(
            StepRun.id, StepRun.status, StepRun.attempts, StepRun.job_id).order_by(StepRun.id)
        ).all(),
        "grades": db.session.execute(db.select(
            Grade.submission_id, Grade.score, Grade.feedback, Grade.notified_at)).all(),
        "releases": db.session.execute(db.select(
            Assignment.id, Assignment.release_at, Assignment.released_at).order_by(Assignment.id)
        ).all(),
        "flash": db.session.execute(db.select(FlashMessage.id, FlashMessage.acked_at)).all(),
        "extensions": db.session.execute(db.select(
            Extension.id, Extension.due_at, Extension.ended_at).order_by(Extension.id)).all(),
        "messages": db.session.execute(db.select(
            Message.id, Message.pinned_at, Message.hidden_at).order_by(Message.id)).all(),
        "reads": db.session.execute(db.select(
            MessageRead.user_id, MessageRead.conversation, MessageRead.last_read_id)).all(),
        "events": db.session.query(Event).count(),
        "jobs": {name: len(Queue(name, connection=get_redis())) for name in QUEUES},
        "scheduled": len(list(scheduler.get_jobs())),
    }


class Visitor:
    """Someone with a browser (session and CSRF token) and, when logged in, an API token."""

    def __init__(self, app, email=None):
        self.email = email
        self.browser = app.test_client()
        self.token_client = app.test_client()
        self.api_headers = {}
        if email:
            self.api_headers = Auth(self.token_client).token(email)
            Auth(self.browser).login(email)
        page = self.browser.get("/" if email else "/login").get_data(as_text=True)
        self.csrf_token = csrf_from(page)

    def request(self, endpoint, method, url, submission_id, csrf=True, session_api=False,
                student_id=None):
        kwargs = body_for(endpoint, submission_id, student_id) if method in WRITE_METHODS else {}
        if url.startswith("/api/") and not session_api:
            kwargs["headers"] = self.api_headers
        elif method in WRITE_METHODS and csrf:
            if url.startswith("/api/"):
                kwargs["headers"] = {"X-CSRFToken": self.csrf_token}
            else:
                kwargs.setdefault("data", {})["csrf_token"] = self.csrf_token
        with self.browser.open(url, method=method, **kwargs) as response:
            response.get_data()
        return response


def expected_refusal(url, who):
    if who is None:
        return 401 if url.startswith("/api/") else 302
    return 403 if url.startswith("/admin/") else 404


def assert_shows_nothing_of_alices(response, scene, what):
    shown = response.get_data(as_text=True) + response.headers.get("Location", "")
    for secret in scene.secrets:
        assert secret not in shown, f"{what} shows {secret!r}"


@pytest.mark.parametrize("who", ["bob", "carol", "tess", None],
                         ids=["another student", "student of another course",
                              "staff of another course", "anonymous"])
def test_no_one_else_can_open_or_change_anything_of_alices(app, scene, who):
    visitor = Visitor(app, who and f"{who}@uni.test")
    before = state()
    for endpoint, rule, method in object_routes(app):
        if who == "bob" and endpoint in OWN_UPLOADS:
            continue
        url = url_of(app, rule, scene)
        if who == "bob" and endpoint in COURSE_CONVERSATIONS:
            if method == "GET":
                response = visitor.request(endpoint, method, url, scene.submission)
                assert response.status_code == 200, f"GET {url} as bob"
                assert_shows_nothing_of_alices(response, scene, f"GET {url} as bob")
            continue
        what = f"{method} {url} as {who or 'anonymous'}"
        response = visitor.request(endpoint, method, url, scene.submission,
                                   student_id=scene.alice)
        assert response.status_code == expected_refusal(url, who), what
        assert_shows_nothing_of_alices(response, scene, what)
        if response.status_code == 302:
            assert response.headers["Location"].startswith("/login"), what
        # Someone else's object and no object at all get the very same answer.
        missing = visitor.request(endpoint, method, url_of(app, rule, scene, missing=True),
                                  MISSING_ID)
        assert missing.status_code == response.status_code, what
        if url.startswith("/api/"):
            assert set(response.get_json()["error"]) == {"code", "message"}, what
            assert missing.get_json() == response.get_json(), what
    assert state() == before


@pytest.mark.parametrize("digits", [18, 19, 40])
def test_a_number_no_row_can_have_is_a_plain_404(app, scene, digits):
    alice = Visitor(app, "alice@uni.test")
    for endpoint, rule, method in object_routes(app):
        if "job_id" in rule.arguments:
            continue  # a job id is text, not a number
        url = url_of(app, rule, scene, missing=True).replace(str(MISSING_ID), "9" * digits)
        response = alice.request(endpoint, method, url, scene.submission)
        # Admin pages refuse Alice before looking; a longer number matches no route at all.
        expected = 403 if url.startswith("/admin/") and digits <= 18 else 404
        assert response.status_code == expected, f"{method} {url}"


def test_a_classmate_sees_the_assignment_but_nothing_of_alices_work(app, scene):
    bob = Visitor(app, "bob@uni.test")
    page = bob.browser.get(f"/assignments/{scene.essay}")
    assert page.status_code == 200
    assert_shows_nothing_of_alices(page, scene, "the assignment page")
    assert f"/submissions/{scene.submission}" not in page.get_data(as_text=True)
    listed = bob.browser.get("/api/v1/assignments", headers=bob.api_headers)
    assert_shows_nothing_of_alices(listed, scene, "the assignment list")


def test_alice_and_her_courses_staff_do_open_what_the_others_cannot(app, scene):
    alice, sam = Visitor(app, "alice@uni.test"), Visitor(app, "sam@uni.test")
    for path in ("", "/file", "/thumbnail"):
        for visitor in (alice, sam):
            response = visitor.request("submissions.detail", "GET",
                                       f"/submissions/{scene.submission}{path}", scene.submission)
            assert response.status_code == 200, (visitor.email, path)
    mine = alice.request("api.get_submission", "GET", f"/api/v1/submissions/{scene.submission}",
                         scene.submission).get_json()
    assert (mine["filename"], mine["sha256"]) == (SECRET_NAME, scene.sha256)
    assert mine["grade"] is None  # marked, but not released: not even Alice sees it yet
    marking = sam.browser.get(f"/staff/assignments/{scene.essay}").get_data(as_text=True)
    assert SECRET_FEEDBACK in marking


# --- CSRF -------------------------------------------------------------------------------------

# Ordered so that each rightful write, sent with its token, succeeds after the ones before it.
RIGHTFUL_WRITES = [
    ("grades.grade", "sam"), ("api.put_grade", "sam"), ("grades.schedule", "sam"),
    ("grades.cancel", "sam"), ("api.post_release", "sam"), ("api.delete_release", "sam"),
    ("submissions.requeue", "sam"), ("api.acknowledge_flash", "alice"),
    ("api.create_submission", "alice"), ("submissions.assignment", "alice"),
    ("grades.release", "sam"), ("grades.withdraw", "sam"),
    ("grades.grant_extension", "sam"), ("grades.withdraw_extension", "sam"),
    ("messages.course", "alice"), ("submissions.post_message", "alice"),
    ("messages.private", "alice"), ("api.post_course_message", "alice"),
    ("api.post_assignment_message", "alice"), ("api.post_private_message", "alice"),
    ("api.read_message", "alice"), ("api.patch_message", "sam"),
    ("messages.moderate_message", "sam"),
]


def test_every_write_needs_its_csrf_token_even_from_the_rightful_user(app, scene):
    writes = [(endpoint, rule, method) for endpoint, rule, method in object_routes(app)
              if method in WRITE_METHODS and not rule.rule.startswith("/admin/")]
    assert {endpoint for endpoint, _, _ in writes} == {e for e, _ in RIGHTFUL_WRITES}, (
        "a write route is new or gone: list it in RIGHTFUL_WRITES")
    visitors = {"alice": Visitor(app, "alice@uni.test"), "sam": Visitor(app, "sam@uni.test")}
    rules = {endpoint: (rule, method) for endpoint, rule, method in writes}
    for endpoint, who in RIGHTFUL_WRITES:
        rule, method = rules[endpoint]
        url = url_of(app, rule, scene)
        visitor = visitors[who]
        before = state()
        forged = visitor.request(endpoint, method, url, scene.submission, csrf=False,
                                 session_api=True, student_id=scene.alice)
        refusal = forged.get_data(as_text=True)
        assert forged.status_code == 400, f"{method} {url} without a CSRF token"
        assert "CSRF" in refusal or "session expired" in refusal, f"{method} {url}: say why"
        assert state() == before, f"{method} {url} without a CSRF token changed something"
        rightful = visitor.request(endpoint, method, url, scene.submission, session_api=True,
                                   student_id=scene.alice)
        assert rightful.status_code < 400, (f"{method} {url} with its token",
                                            rightful.get_data(as_text=True)[:300])


# --- live-event topics ------------------------------------------------------------------------

def topics_of(scene):
    return {
        "submission": f"submission.{scene.submission}",
        "user": f"user.{scene.alice}",
        "assignment": f"assignment.{scene.essay}",
        "assignment staff": f"assignment.{scene.essay}.staff",
        "course": f"course.{scene.course}",
        "course staff": f"course.{scene.course}.staff",
    }


def open_stream(visitor, *topics, bearer=False):
    query = "&".join(f"topic={topic}" for topic in topics)
    if bearer:
        response = visitor.token_client.get(f"/events?{query}", headers=visitor.api_headers,
                                            buffered=False)
    else:
        response = visitor.browser.get(f"/events?{query}", buffered=False)
    try:
        first = next(iter(response.response), b"") if response.status_code == 200 else b""
        body = response.get_data() if response.status_code != 200 else first
    finally:
        response.close()
    return response.status_code, body


@pytest.mark.parametrize("who, allowed", [
    ("bob", {"assignment", "course"}),
    ("carol", set()),
    ("tess", set()),
], ids=["another student", "student of another course", "staff of another course"])
def test_topics_of_alice_are_refused_before_the_stream_starts(app, scene, who, allowed):
    visitor = Visitor(app, f"{who}@uni.test")
    for name, topic in topics_of(scene).items():
        for bearer in (False, True):
            status, body = open_stream(visitor, topic, bearer=bearer)
            assert status == (200 if name in allowed else 403), (who, topic, bearer)
            if status == 403:
                assert b"forbidden" in body and SECRET_FLASH.encode() not in body
    # One refused topic refuses the whole stream, whatever else it asks for.
    own = f"user.{scene.user_ids[who]}"
    assert open_stream(visitor, own)[0] == 200
    assert open_stream(visitor, own, f"submission.{scene.submission}")[0] == 403


def test_anonymous_visitor_cannot_follow_any_topic(app, scene):
    anonymous = Visitor(app)
    for topic in topics_of(scene).values():
        assert open_stream(anonymous, topic)[0] == 401


def test_alice_and_her_courses_staff_may_follow_her_topics(app, scene):
    topics = topics_of(scene)
    alice, sam = Visitor(app, "alice@uni.test"), Visitor(app, "sam@uni.test")
    assert open_stream(alice, topics["submission"], topics["user"], topics["assignment"],
                       topics["course"])[0] == 200
    assert open_stream(sam, topics["submission"], topics["assignment staff"],
                       topics["course"], topics["course staff"])[0] == 200
    assert open_stream(alice, topics["course staff"])[0] == 403
    assert open_stream(sam, topics["user"])[0] == 403
