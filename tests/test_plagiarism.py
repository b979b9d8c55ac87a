import io
import time

import pytest
from PIL import Image

from app import pipeline
from app.extensions import db, get_redis
from app.models import Event, ExternalRecord, StepRun, Submission
from app.services.circuit import CircuitBreaker, CircuitOpen
from tests.conftest import Auth, run_jobs
from tests.helpers import upload_api
from tests.simulators import (  # noqa: F401
    TURNITIN_KEY,
    rerun_after_crash,
    run_jobs_when_due,
    run_jobs_with_scheduler,
    scheduled_retries,
    turnitin_simulator,
)

ESSAY = (
    "Message queues let a web application answer a student at once and leave the slow work "
    "to background workers. Each worker takes the oldest job first, records what it did in the "
    "database, and publishes an event so the browser can show progress without reloading. When "
    "a worker dies in the middle of a job, the job is not lost: a reconciler compares the "
    "database with the queue and puts any missing work back. Retries wait a little longer each "
    "time so a struggling service gets room to recover, and every outside call carries an "
    "idempotency key so that repeating it never creates a second copy of anything."
)
ESSAY_REWORDED = (
    ESSAY.replace("answer a student at once", "answer a student immediately")
    .replace("a little longer each time", "somewhat longer every time")
)
UNRELATED = (
    "Charcoal drawing rewards patience. Start with the largest shapes, squint to see the "
    "values, and only then commit to the darkest accents. Blending with a tissue softens edges "
    "but dulls the paper's tooth, so many artists prefer a kneaded eraser for lifting light "
    "back out of the shadows. Fixative protects the finished sketch from smudging in a folder."
)
SOURCE = "https://en.wikipedia.org/wiki/Message_queue"


def upload(client, auth, email, assignment_id, content, filename):
    """Upload as `email` through the API; returns the submission id and that user's headers."""
    headers = auth.token(email)
    response = upload_api(client, headers, assignment_id, content, filename)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"], headers


def seen_by(client, headers, submission_id):
    """The submission as the course's staff see it: the step details as recorded (its
    student reads them in plain words)."""
    staff = Auth(client).token("sam@uni.test")
    response = client.get(f"/api/v1/submissions/{submission_id}", headers=staff)
    assert response.status_code == 200
    return response.get_json()


def step(view, name="plagiarism"):
    return next(s for s in view["steps"] if s["name"] == name)


def step_trail(submission_id, name="plagiarism"):
    """(status, detail) of every recorded event of one step, oldest first."""
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id, type="step").order_by(Event.id)
    ).scalars()
    return [(e.payload["status"], e.payload["detail"]) for e in events
            if e.payload["step"] == name]


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def crash_after(submission_id, stage):
    """A worker killed with -9 once the Turnitin work had reached `stage`, then the step queued
    again as the reconciler does."""
    record = db.session.execute(
        db.select(ExternalRecord).filter_by(submission_id=submission_id, service="turnitin")
    ).scalar_one()
    record.state = stage
    db.session.commit()
    rerun_after_crash(submission_id, "plagiarism")


# Built-in check (no TURNITIN_URL)

def test_near_identical_essay_scores_high_and_names_the_earlier_one(client, auth, world):
    essay = world.essay.id
    alice_submission, alice = upload(client, auth, "alice@uni.test", essay, ESSAY.encode(),
                                     "essay.txt")
    run_jobs()
    bob_submission, bob = upload(client, auth, "bob@uni.test", essay,
                                 ESSAY_REWORDED.encode(), "my-essay.txt")
    run_jobs()

    first = seen_by(client, alice, alice_submission)
    assert step(first)["detail"] == "Similarity 0% (compared with 0 other submissions)"
    view = seen_by(client, bob, bob_submission)
    assert view["status"] == "completed"
    assert view["similarity"] >= 80
    assert step(view)["status"] == "succeeded"
    assert step(view)["detail"] == (
        f"Similarity {view['similarity']}% (compared with 1 other submission); "
        f"closest: submission #{alice_submission} ({view['similarity']}%)"
    )
    report = db.session.get(Submission, bob_submission).similarity_report
    assert report["matches"][0]["submission_id"] == alice_submission


def test_unrelated_essay_scores_low(client, auth, world):
    essay = world.essay.id
    upload(client, auth, "alice@uni.test", essay, ESSAY.encode(), "essay.txt")
    run_jobs()
    bob_submission, bob = upload(client, auth, "bob@uni.test", essay, UNRELATED.encode(),
                                 "drawing-notes.txt")
    run_jobs()

    view = seen_by(client, bob, bob_submission)
    assert view["status"] == "completed"
    assert view["similarity"] < 10
    assert step(view)["detail"].startswith(
        f"Similarity {view['similarity']}% (compared with 1 other submission)")


def test_own_earlier_attempt_is_not_counted_as_copying(client, auth, world):
    essay = world.essay.id
    upload(client, auth, "alice@uni.test", essay, ESSAY.encode(), "draft.txt")
    run_jobs()
    second, alice = upload(client, auth, "alice@uni.test", essay, ESSAY_REWORDED.encode(),
                           "final.txt")
    run_jobs()

    view = seen_by(client, alice, second)
    assert view["similarity"] == 0
    assert step(view)["detail"] == "Similarity 0% (compared with 0 other submissions)"


def test_file_without_text_is_skipped_with_the_reason(client, auth, world):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, png_bytes(),
                               "diagram.png")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert view["similarity"] is None
    assert step(view)["status"] == "skipped"
    assert step(view)["detail"] == "Not checked: no text could be read from diagram.png"


# Turnitin (TURNITIN_URL set, the simulator behind it)

def test_turnitin_score_and_top_source_are_shown(client, auth, world, turnitin):
    turnitin.add_source(SOURCE, ESSAY)
    turnitin.report_seconds = 0.3
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id,
                               ESSAY_REWORDED.encode(), "essay.txt")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert view["similarity"] >= 80
    assert step(view)["detail"] == (
        f"Similarity {view['similarity']}% (Turnitin); top source: {SOURCE}")
    [remote] = turnitin.submissions.values()
    assert (remote["title"], remote["filename"]) == ("essay.txt", "essay.txt")
    assert remote["owner"] == f"student-{view['student_id']}"
    # The report took a while, so the job polled for it.
    assert len(turnitin.requests("GET", "/similarity")) > 1
    report = db.session.get(Submission, submission).similarity_report
    assert report["source"] == "turnitin"
    assert report["turnitin_id"] == remote["id"]
    assert report["matches"][0]["name"] == SOURCE


def test_turnitin_errors_are_retried_and_leave_one_turnitin_submission(
        client, auth, world, turnitin):
    turnitin.add_source(SOURCE, ESSAY)
    turnitin.inject(status=500, times=2)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, ESSAY.encode(),
                               "essay.txt")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert step(view)["status"] == "succeeded"
    assert step(view)["attempts"] == 3
    assert step(view)["detail"] == f"Similarity 100% (Turnitin); top source: {SOURCE}"
    statuses = [status for status, _ in step_trail(submission)]
    assert statuses.count("retrying") == 2
    assert statuses[-1] == "succeeded"
    assert len(turnitin.submissions) == 1
    # Creates Turnitin answered with an error made nothing there: none is left unconfirmed.
    assert [r.status for r in turnitin.requests("POST", "/api/v1/submissions")] == [500, 500, 201]
    record = db.session.execute(
        db.select(ExternalRecord).filter_by(submission_id=submission, service="turnitin")
    ).scalar_one()
    assert "unconfirmed_creates" not in record.data


@pytest.mark.slow
def test_rate_limited_call_is_retried_no_earlier_than_turnitin_asked(
        client, auth, world, turnitin):
    turnitin.inject(status=429, retry_after=2)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, ESSAY.encode(),
                               "essay.txt")
    run_jobs()

    [limited] = turnitin.requests()
    assert limited.status == 429
    plagiarism = step(seen_by(client, alice, submission))
    assert plagiarism["status"] == "retrying"
    assert plagiarism["detail"] == (
        "Turnitin asked us to slow down; trying again in 3 s (attempt 1 of 8)")
    [due] = scheduled_retries().values()
    assert due.timestamp() >= limited.answered_at + 2

    run_jobs_with_scheduler()
    assert len(turnitin.requests()) == 1, "the retry ran before Retry-After had passed"

    run_jobs_when_due()
    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert step(view)["status"] == "succeeded"
    retried = turnitin.requests()[1]
    assert retried.received_at - limited.answered_at >= 2


def test_failed_upload_resumes_the_same_turnitin_submission(client, auth, world, turnitin):
    turnitin.inject(status=500, method="PUT", path="/original")
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, ESSAY.encode(),
                               "essay.txt")
    run_jobs()

    assert step(seen_by(client, alice, submission))["status"] == "succeeded"
    assert len(turnitin.submissions) == 1
    assert len(turnitin.requests("POST", "/api/v1/submissions")) == 1
    assert [r.status for r in turnitin.requests("PUT", "/original")] == [500, 202]


@pytest.mark.parametrize("stage", ["created", "uploaded", "requested", "complete"])
def test_rerun_after_a_crash_creates_no_second_turnitin_submission(
        client, auth, world, turnitin, stage):
    turnitin.add_source(SOURCE, ESSAY)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id,
                               ESSAY_REWORDED.encode(), "essay.txt")
    run_jobs()
    score = seen_by(client, alice, submission)["similarity"]
    calls = len(turnitin.requests())

    crash_after(submission, stage)
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert step(view)["status"] == "succeeded"
    assert view["similarity"] == score
    assert len(turnitin.submissions) == 1
    assert len(turnitin.requests("POST", "/api/v1/submissions")) == 1
    assert len(turnitin.requests("PUT", "/original")) == 1
    if stage == "complete":
        assert len(turnitin.requests()) == calls


def checked_once_turnitin_answered_too_late(app, client, auth, world, turnitin, method, path):
    """Alice's essay checked while one call to `path` is answered after our client gave up;
    returns the submission id and what Alice sees."""
    app.config["TURNITIN_TIMEOUT"] = 0.5
    turnitin.add_source(SOURCE, ESSAY)
    turnitin.inject(delay=2, method=method, path=path)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, ESSAY.encode(),
                               "essay.txt")
    run_jobs()
    return submission, seen_by(client, alice, submission)


def test_turnitin_that_does_not_answer_in_time_is_retried(app, client, auth, world, turnitin):
    submission, view = checked_once_turnitin_answered_too_late(
        app, client, auth, world, turnitin, "GET", "/similarity")
    assert step(view)["status"] == "succeeded"
    assert step(view)["attempts"] == 2
    assert len(turnitin.submissions) == 1
    assert db.session.execute(
        db.select(StepRun.last_error).filter_by(submission_id=submission, name="plagiarism")
    ).scalar_one().endswith("no answer (ReadTimeout)")


def test_a_key_turnitin_refuses_fails_the_check_at_once_until_staff_requeue_it(
        app, client, auth, world, turnitin):
    app.config["TURNITIN_API_KEY"] = "a-key-turnitin-never-issued"
    turnitin.add_source(SOURCE, ESSAY)
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, ESSAY.encode(),
                               "essay.txt")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "needs_attention"
    assert (step(view)["status"], step(view)["attempts"]) == ("failed", 1)
    assert step(view)["detail"] == "Turnitin refused the request; staff have been alerted"
    student = client.get(f"/api/v1/submissions/{submission}", headers=alice).get_json()
    assert "error" not in step(student)
    assert db.session.execute(
        db.select(StepRun.last_error).filter_by(submission_id=submission, name="plagiarism")
    ).scalar_one() == "Refused: Turnitin refused the request (401 Unauthorized: Unauthorized)"
    assert [r.status for r in turnitin.requests()] == [401]
    assert scheduled_retries() == {}

    app.config["TURNITIN_API_KEY"] = TURNITIN_KEY
    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission, name="plagiarism")).scalar_one()
    assert pipeline.requeue_step(step_run).requeued
    run_jobs()
    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert step(view)["detail"] == f"Similarity 100% (Turnitin); top source: {SOURCE}"
    assert len(turnitin.submissions) == 1


def test_create_whose_answer_is_lost_is_counted_against_the_empty_turnitin_submission(
        app, client, auth, world, turnitin, caplog):
    submission, view = checked_once_turnitin_answered_too_late(
        app, client, auth, world, turnitin, "POST", "/api/v1/submissions")
    assert step(view)["status"] == "succeeded"
    assert step(view)["attempts"] == 2
    # Turnitin made a submission for the create we gave up on; nothing can find it again.
    assert len(turnitin.submissions) == 2
    empty = [tid for tid, held in turnitin.submissions.items() if held["uploaded_at"] is None]
    record = db.session.execute(
        db.select(ExternalRecord).filter_by(submission_id=submission, service="turnitin")
    ).scalar_one()
    assert len(empty) == 1 and empty[0] != record.remote_id
    assert record.data["unconfirmed_creates"] == 1
    assert "unconfirmed_creates" not in db.session.get(Submission, submission).similarity_report
    assert view["similarity"] == 100
    assert (f"event=turnitin_create_unconfirmed submission_id={submission} "
            "unconfirmed_creates=1") in caplog.text


@pytest.mark.slow
def test_circuit_opens_after_repeated_failures_and_closes_when_turnitin_is_back(
        app, client, auth, world, turnitin):
    app.config.update(TURNITIN_CIRCUIT_FAILURES=3, TURNITIN_CIRCUIT_COOLDOWN=5)
    circuit = CircuitBreaker(get_redis(), "turnitin", threshold=3)
    turnitin.inject(status=500, times=1000)
    essay = world.essay.id
    alice_submission, alice = upload(client, auth, "alice@uni.test", essay, ESSAY.encode(),
                                     "essay.txt")
    run_jobs()

    assert len(turnitin.requests()) == 3
    assert circuit.state == "open"
    plagiarism = step(seen_by(client, alice, alice_submission))
    assert plagiarism["status"] == "retrying"
    assert plagiarism["detail"].startswith("Turnitin is unavailable")

    bob_submission, bob = upload(client, auth, "bob@uni.test", essay, UNRELATED.encode(),
                                 "essay.txt")
    run_jobs()
    assert len(turnitin.requests()) == 3, "a check called Turnitin while the circuit was open"
    assert step(seen_by(client, bob, bob_submission))["detail"].startswith(
        "Turnitin is unavailable")

    turnitin.clear_faults()
    run_jobs_when_due()
    assert circuit.state == "closed"
    for submission, headers in ((alice_submission, alice), (bob_submission, bob)):
        view = seen_by(client, headers, submission)
        assert view["status"] == "completed"
        assert step(view)["status"] == "succeeded"
    assert len(turnitin.submissions) == 2


def test_while_one_trial_call_is_in_flight_other_workers_keep_waiting(app):
    first_worker = CircuitBreaker(get_redis(), "turnitin", threshold=2, cooldown=1)
    second_worker = CircuitBreaker(get_redis(), "turnitin", threshold=2, cooldown=1)
    first_worker.record_failure()
    second_worker.record_failure()
    with pytest.raises(CircuitOpen):
        first_worker.before_call()

    time.sleep(1.1)
    assert second_worker.state == "half-open"
    first_worker.before_call()  # the trial call
    with pytest.raises(CircuitOpen):
        second_worker.before_call()
    first_worker.record_success()
    assert second_worker.state == "closed"
    second_worker.before_call()


def test_file_turnitin_cannot_read_is_skipped_with_the_reason(client, auth, world, turnitin):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id,
                               b"Too short to compare.", "note.txt")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert view["status"] == "completed"
    assert step(view)["status"] == "skipped"
    assert step(view)["detail"] == (
        "Not checked: the file has too little text for Turnitin to compare")


def test_image_is_not_sent_to_turnitin(client, auth, world, turnitin):
    submission, alice = upload(client, auth, "alice@uni.test", world.essay.id, png_bytes(),
                               "diagram.png")
    run_jobs()

    view = seen_by(client, alice, submission)
    assert step(view)["status"] == "skipped"
    assert step(view)["detail"] == "Not checked: Turnitin cannot read .png files"
    assert turnitin.requests() == []
