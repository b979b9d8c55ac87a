from datetime import timedelta
from pathlib import Path

import pytest

from app.extensions import db
from app.models import utcnow
from tests.conftest import run_jobs
from tests.helpers import only_submission, submission_count, trail, upload_form

ESSAY = b"My essay about queues.\nIt has several lines of original prose.\n"


def incoming_files(app):
    folder = Path(app.config["STORAGE_DIR"]) / "incoming"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_upload_gives_a_receipt_with_hash_size_and_times(app, client, auth, world):
    import hashlib

    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 303
    submission = only_submission()
    assert response.headers["Location"].endswith(f"/submissions/{submission.id}")
    assert submission.sha256 == hashlib.sha256(ESSAY).hexdigest()
    assert submission.size == len(ESSAY)
    assert submission.late is False
    assert submission.status == "received"
    assert [s.status for s in submission.steps] == ["queued"] + ["pending"] * 5
    assert Path(submission.incoming_path).read_bytes() == ESSAY
    assert not any(name.endswith(".part") for name in incoming_files(app))

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Submission #{submission.id}" in page
    assert submission.sha256 in page
    assert f"{len(ESSAY)} bytes" in page
    assert submission.received_at.strftime("%Y-%m-%d %H:%M:%S UTC") in page
    assert ("GMT" in page) or ("BST" in page)  # the course's Europe/London time
    assert "On time" in page
    for title in ("Virus scan", "Safe storage", "Similarity check", "Receipt email", "Preview"):
        assert title in page


def test_upload_is_processed_to_completed_with_a_full_event_trail(client, auth, world):
    auth.login("alice@uni.test")
    upload_form(client, world.essay.id, ESSAY, "essay.txt")
    run_jobs()
    submission = only_submission()
    assert submission.status == "completed"
    assert {s.name: s.status for s in submission.steps} == {
        "scan": "succeeded", "store": "succeeded", "plagiarism": "succeeded",
        "admin_sync": "skipped", "email": "succeeded", "thumbnail": "succeeded"}
    events = trail(submission.id)
    assert events[0] == ("submission", "", "received")
    assert events[-1] == ("submission", "", "completed")
    for step in ("scan", "store", "email"):
        statuses = [status for _, name, status in events if name == step]
        assert statuses == ["queued", "running", "succeeded"]
    assert events.index(("step", "scan", "succeeded")) < events.index(("step", "store", "queued"))
    page = client.get(f"/submissions/{submission.id}").get_data(as_text=True)
    assert "completed" in page
    assert "this course does not send work to a student records system" in page  # why skipped


def test_late_upload_is_flagged_late(client, auth, world):
    world.essay.due_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 303
    assert only_submission().late is True
    assert "Late" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_double_clicked_form_makes_one_submission(client, auth, world):
    auth.login("alice@uni.test")
    first = upload_form(client, world.essay.id, ESSAY, "essay.txt", key="k-123")
    second = upload_form(client, world.essay.id, ESSAY, "essay.txt", key="k-123")
    assert first.headers["Location"] == second.headers["Location"]
    assert submission_count() == 1


@pytest.mark.parametrize(("content", "filename", "status", "message"), [
    (b"", "essay.txt", 400, "The file is empty."),
    (b"%PDF-1.4 but called txt\x00\x01\x02", "essay.txt", 415, "is not a .txt file"),
    (b"plain text pretending", "essay.pdf", 415, "is not a .pdf file"),
    (b"MZ\x90\x00 a program", "essay.exe", 415, "accepts pdf, txt, py"),
    (b"hello", "../../etc/passwd.txt", 400, "folders"),
    (b"hello", "bad\x07name.txt", 400, "control characters"),
    (b"hello", "gpj.\u202etxt", 400, "control characters"),
    (b"hello", ".hidden.txt", 400, "start with a dot"),
])
def test_bad_upload_gets_a_clear_error_and_writes_nothing(
        app, client, auth, world, content, filename, status, message):
    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, content, filename)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in page.replace("&#39;", "'")
    assert submission_count() == 0
    assert incoming_files(app) == []


def test_unicode_file_name_is_kept(client, auth, world):
    auth.login("alice@uni.test")
    assert upload_form(client, world.essay.id, ESSAY, "Résumé – 論文.txt").status_code == 303
    assert only_submission().filename == "Résumé – 論文.txt"


def test_oversize_upload_is_refused_with_413(app, client, auth, world):
    auth.login("alice@uni.test")
    big = b"a" * (world.essay.max_size_mb * 1024 * 1024 + 1)
    response = upload_form(client, world.essay.id, big, "essay.txt")
    assert response.status_code == 413
    assert "at most 2 MB" in response.get_data(as_text=True)
    assert submission_count() == 0
    assert incoming_files(app) == []


def test_request_over_the_global_limit_is_refused_before_reading_it(app, client, auth, world):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    auth.login("alice@uni.test")
    response = upload_form(client, world.essay.id, b"a" * 4096, "essay.txt")
    assert response.status_code == 413
    assert submission_count() == 0


def test_missing_file_is_refused(client, auth, world):
    from tests.conftest import csrf_from

    auth.login("alice@uni.test")
    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    response = client.post(f"/assignments/{world.essay.id}",
                           data={"csrf_token": csrf_from(page)},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Choose a file" in response.get_data(as_text=True)
    assert submission_count() == 0


def test_form_without_csrf_token_is_refused(client, auth, world):
    import io

    auth.login("alice@uni.test")
    response = client.post(f"/assignments/{world.essay.id}",
                           data={"file": (io.BytesIO(ESSAY), "essay.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert submission_count() == 0


def test_assignment_of_another_course_is_not_found(client, auth, world):
    auth.login("alice@uni.test")
    assert client.get(f"/assignments/{world.sketch.id}").status_code == 404
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")  # get a CSRF token
    assert response.status_code == 303
    import io

    from tests.conftest import csrf_from

    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    response = client.post(f"/assignments/{world.sketch.id}", data={
        "csrf_token": csrf_from(page), "file": (io.BytesIO(b"\x89PNG\r\n\x1a\n"), "x.png")},
        content_type="multipart/form-data")
    assert response.status_code == 404
    assert submission_count() == 1


def test_upload_after_cutoff_is_refused_with_the_time(app, client, auth, world):
    world.essay.due_at = utcnow() - timedelta(days=2)
    world.essay.cutoff_at = utcnow() - timedelta(days=1)
    db.session.commit()
    cutoff = world.essay.cutoff_at
    auth.login("alice@uni.test")
    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert "Submissions closed at" in page
    assert 'id="upload-form"' not in page
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 403
    assert f"{cutoff:%Y-%m-%d %H:%M} UTC" in response.get_data(as_text=True)
    assert submission_count() == 0
    assert incoming_files(app) == []


def test_staff_cannot_submit_as_a_student(client, auth, world):
    auth.login("sam@uni.test")
    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert 'id="upload-form"' not in page
    assert upload_form(client, world.essay.id, ESSAY, "essay.txt").status_code == 404
    assert submission_count() == 0


def test_another_students_submission_page_is_not_found(client, auth, world):
    auth.login("alice@uni.test")
    upload_form(client, world.essay.id, ESSAY, "essay.txt")
    submission = only_submission()
    client.post("/logout", data={})
    with client.session_transaction() as session:
        session.clear()
    auth.login("bob@uni.test")
    assert client.get(f"/submissions/{submission.id}").status_code == 404
    with client.session_transaction() as session:
        session.clear()
    auth.login("sam@uni.test")
    assert client.get(f"/submissions/{submission.id}").status_code == 200
    with client.session_transaction() as session:
        session.clear()
    auth.login("tess@uni.test")
    assert client.get(f"/submissions/{submission.id}").status_code == 404
