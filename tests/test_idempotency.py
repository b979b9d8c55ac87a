"""An Idempotency-Key names one upload to one assignment: resending it to the same assignment
replays that upload's receipt, and the same key sent to another assignment is a new upload."""

import hashlib
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from app.extensions import db
from app.models import Assignment, Submission, utcnow
from app.submissions import intake
from tests.helpers import upload_api, upload_form

ONE = b"The first assignment's file.\n"
TWO = b"The second assignment's file, which is a different one.\n"


@pytest.fixture
def lab(world):
    """A second open assignment in alice's course."""
    lab = Assignment(course=world.cs, title="Lab report", due_at=utcnow() + timedelta(days=1),
                     allowed_types="txt,pdf", max_size_mb=2)
    db.session.add(lab)
    db.session.commit()
    return lab


def stored_files():
    """What was recorded for each assignment: {assignment id: [(filename, file bytes)]}."""
    db.session.commit()  # see what the requests committed
    found = {}
    for submission in db.session.execute(db.select(Submission).order_by(Submission.id)).scalars():
        found.setdefault(submission.assignment_id, []).append(
            (submission.filename, Path(submission.incoming_path).read_bytes()))
    return found


def assert_receipt(response, assignment, filename, content):
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["assignment_id"] == assignment.id
    assert body["filename"] == filename
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    return body


@pytest.mark.parametrize("first_is_essay", [True, False], ids=["essay-then-lab", "lab-then-essay"])
def test_same_key_sent_to_another_assignment_is_a_new_upload_with_its_own_file(
        client, auth, world, lab, first_is_essay):
    headers = auth.token("alice@uni.test")
    (first, first_file, first_content), (second, second_file, second_content) = (
        (world.essay, "one.txt", ONE), (lab, "two.txt", TWO))[::1 if first_is_essay else -1]

    one = upload_api(client, headers, first.id, first_content, first_file, key="K")
    two = upload_api(client, headers, second.id, second_content, second_file, key="K")

    one_body = assert_receipt(one, first, first_file, first_content)
    two_body = assert_receipt(two, second, second_file, second_content)
    assert "Idempotent-Replayed" not in one.headers
    assert "Idempotent-Replayed" not in two.headers
    assert one_body["id"] != two_body["id"]
    assert stored_files() == {first.id: [(first_file, first_content)],
                              second.id: [(second_file, second_content)]}

    # Each assignment's key still replays its own upload, and only that one.
    again = upload_api(client, headers, second.id, second_content, second_file, key="K")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == two_body["id"]
    assert again.get_json()["assignment_id"] == second.id


def test_form_key_sent_to_another_assignment_page_is_a_new_upload(app, client, auth, world, lab):
    auth.login("alice@uni.test")
    essay = upload_form(client, world.essay.id, ONE, "one.txt", key="form-key")
    report = upload_form(client, lab.id, TWO, "two.txt", key="form-key")
    double_click = upload_form(client, lab.id, TWO, "two.txt", key="form-key")

    assert essay.status_code == report.status_code == double_click.status_code == 303
    assert essay.headers["Location"] != report.headers["Location"]
    assert double_click.headers["Location"] == report.headers["Location"]
    assert stored_files() == {world.essay.id: [("one.txt", ONE)], lab.id: [("two.txt", TWO)]}
    page = client.get(report.headers["Location"]).get_data(as_text=True)
    assert "two.txt" in page and "Lab report" in page


def race(app, headers, uploads):
    """Send the uploads at once, each from its own client and thread, all of them past the
    look-up of their key before any records its submission. Returns the responses, in order."""
    at_the_line = threading.Barrier(len(uploads), timeout=20)
    record = intake._record

    def record_together(*args):
        at_the_line.wait()
        return record(*args)

    responses, errors = [None] * len(uploads), []

    def send(index, assignment_id, content, filename, key):
        try:
            with app.app_context():
                response = upload_api(app.test_client(), headers, assignment_id, content,
                                      filename, key)
                responses[index] = (response.status_code, dict(response.headers),
                                    response.get_json())
                db.session.remove()
        except Exception as exc:  # reported below, with the upload's file name
            errors.append(f"{filename}: {exc!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intake, "_record", record_together)
        threads = [threading.Thread(target=send, args=(index, *upload))
                   for index, upload in enumerate(uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    return responses


def test_racing_resends_of_one_upload_make_one_submission_both_answers_name(
        app, auth, world):
    headers = auth.token("alice@uni.test")
    answers = race(app, headers, [(world.essay.id, ONE, "one.txt", "K"),
                                  (world.essay.id, ONE, "one.txt", "K")])

    assert [status for status, _, _ in answers] == [202, 202]
    assert len({body["id"] for _, _, body in answers}) == 1
    assert sorted(headers.get("Idempotent-Replayed", "") for _, headers, _ in answers) == [
        "", "true"]
    assert stored_files() == {world.essay.id: [("one.txt", ONE)]}
    # The loser's copy of the file is not left behind.
    incoming = Path(app.config["STORAGE_DIR"], "incoming")
    assert [path.read_bytes() for path in incoming.iterdir()] == [ONE]


def test_racing_uploads_with_one_key_to_two_assignments_make_two_submissions(
        app, auth, world, lab):
    headers = auth.token("alice@uni.test")
    (essay_status, essay_headers, essay), (lab_status, lab_headers, report) = race(
        app, headers, [(world.essay.id, ONE, "one.txt", "K"), (lab.id, TWO, "two.txt", "K")])

    assert essay_status == lab_status == 202
    assert essay["assignment_id"] == world.essay.id and essay["filename"] == "one.txt"
    assert report["assignment_id"] == lab.id and report["filename"] == "two.txt"
    assert "Idempotent-Replayed" not in essay_headers
    assert "Idempotent-Replayed" not in lab_headers
    assert stored_files() == {world.essay.id: [("one.txt", ONE)], lab.id: [("two.txt", TWO)]}
