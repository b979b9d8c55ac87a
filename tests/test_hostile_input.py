"""Hostile uploads. Some are refused at intake with a clear 4xx and leave nothing behind; the
rest are accepted with a receipt and then dealt with by the pipeline, which must end them
(rejected or completed) without a crashed worker, a retry loop or a stuck submission."""

import html
import io
import re
import time
from pathlib import Path

import pytest
from markupsafe import escape
from werkzeug.http import parse_options_header

from app import pipeline
from app.extensions import db
from app.models import Event, StepRun, Submission
from tests import samples
from tests import samples_hostile as hostile
from tests.clamd import ClamdServer
from tests.conftest import Auth, csrf_from, run_jobs
from tests.helpers import upload_api, upload_form

ESSAY = b"Queues let the web answer at once while workers do the slow part.\n"


def left_behind(app):
    """Everything intake could have written: rows, events, queued jobs and received files."""
    incoming = Path(app.config["STORAGE_DIR"]) / "incoming"
    db.session.expire_all()
    return {
        "submissions": db.session.query(Submission).count(),
        "steps": db.session.query(StepRun).count(),
        "events": db.session.query(Event).count(),
        "queued jobs": pipeline.backlog(),
        "incoming files": sorted(p.name for p in incoming.iterdir()) if incoming.exists() else [],
    }


class ApiChannel:
    name = "api"

    def __init__(self, client, auth, assignment):
        self.client = client
        self.url = f"/api/v1/assignments/{assignment.id}/submissions"
        self.assignment = assignment
        self.headers = auth.token("alice@uni.test")

    def upload(self, content, filename):
        return upload_api(self.client, self.headers, self.assignment.id, content, filename)

    def post(self, body, content_type, environ=None):
        return self.client.post(self.url, data=body, content_type=content_type,
                                headers=self.headers, environ_overrides=environ)

    def multipart(self, filename, content):
        return hostile.multipart(filename=filename, content=content)

    @staticmethod
    def refusal(response):
        body = response.get_json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        return body["error"]["code"], body["error"]["message"]


class FormChannel:
    name = "form"

    def __init__(self, client, auth, assignment):
        self.client = client
        self.url = f"/assignments/{assignment.id}"
        self.assignment = assignment
        auth.login("alice@uni.test")

    def upload(self, content, filename):
        return upload_form(self.client, self.assignment.id, content, filename)

    def post(self, body, content_type, environ=None):
        return self.client.post(self.url, data=body, content_type=content_type,
                                environ_overrides=environ)

    def multipart(self, filename, content):
        page = self.client.get(self.url).get_data(as_text=True)
        key = re.search(r'name="idempotency_key"[^>]*value="([^"]*)"', page).group(1)
        return hostile.multipart({"csrf_token": csrf_from(page), "idempotency_key": key},
                                 filename=filename, content=content)

    @staticmethod
    def refusal(response):
        page = response.get_data(as_text=True)
        found = re.search(r'id="upload-error">(.*?)</p>', page, re.S) or re.search(
            r'<main[^>]*>(.*?)</main>', page, re.S)
        assert found, page
        return None, html.unescape(re.sub(r"<[^>]+>", " ", found.group(1)))


@pytest.fixture(params=[ApiChannel, FormChannel], ids=lambda c: c.name)
def channel(request, client, auth, world):
    return request.param(client, auth, world.essay)


def assert_refused(app, channel, response, before, status, code, message):
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    found_code, found_message = channel.refusal(response)
    if channel.name == "api":
        assert found_code == code
    assert message in found_message
    assert left_behind(app) == before


# --- refused at intake ------------------------------------------------------------------------

BAD_FILES = {
    "empty txt": (b"", "essay.txt", 400, "empty_file", "The file is empty."),
    "empty pdf": (b"", "essay.pdf", 400, "empty_file", "The file is empty."),
    "png named pdf": (samples.png(40, 40), "essay.pdf", 415, "type_mismatch",
                      "is not a .pdf file"),
    "exe named zip": (b"MZ\x90\x00\x03 a Windows program", "essay.zip", 415, "type_mismatch",
                      "is not a .zip file"),
    "pdf-zip polyglot named zip": (hostile.pdf_zip_polyglot({"essay.txt": ESSAY}), "essay.zip",
                                   415, "type_mismatch", "is not a .zip file"),
    "shell script": (b"#!/bin/sh\nrm -rf ~\n", "essay.sh", 415, "type_not_allowed",
                     "accepts pdf, txt, py"),
    "dot-dot slash": (ESSAY, "../../../etc/cron.d/essay.txt", 400, "bad_filename", "folders"),
    "dot-dot alone": (ESSAY, "..", 400, "bad_filename", "folders"),
    "escape sequence": (ESSAY, "essay\x1b[31m.txt", 400, "bad_filename", "control characters"),
    "rtl override": (ESSAY, "essay\u202etxt.py", 400, "bad_filename", "control characters"),
    "bidi isolate": (ESSAY, "essay\u2067.txt", 400, "bad_filename", "control characters"),
    "300-byte name": (ESSAY, "a" * 296 + ".txt", 400, "bad_filename", "longer than 255 bytes"),
    "300-byte cjk name": (ESSAY, "論" * 99 + ".txt", 400, "bad_filename",
                          "longer than 255 bytes"),
    "dot file": (ESSAY, ".htaccess.txt", 400, "bad_filename", "start with a dot"),
    "blank name": (ESSAY, "   ", 400, "bad_filename", "no name"),
}

# File names sent as raw bytes in the part header, where a test client would tidy them up.
BAD_RAW_NAMES = {
    "nul": (b"essay\x00.txt", 400, "bad_filename", "control characters"),
    "delete": (b"essay\x7f.txt", 400, "bad_filename", "control characters"),
    "dot-dot backslash": (b"..\\\\..\\\\windows\\\\essay.txt", 400, "bad_filename", "folders"),
    "invalid utf-8": (b"\xff\xfeessay.txt", 400, "unreadable_upload", "not valid UTF-8"),
    "cut utf-8 sequence": (b"ess\xc3ay.txt", 400, "unreadable_upload", "not valid UTF-8"),
    # The line break ends the quoted name, so no part carries a file name any more.
    "header injection": (b"essay\r\nContent-Type: text/html\r\n\r\n<script>.txt", 400,
                         "no_file", "Choose a file"),
}

NOT_MULTIPART = {
    "raw bytes": (ESSAY, "application/octet-stream"),
    "json": (b'{"file": "essay.txt"}', "application/json"),
    "url-encoded form": (b"file=essay.txt", "application/x-www-form-urlencoded"),
}


# Cases share one test per channel (each a subtest): setting up users costs more than a case.
def test_bad_file_is_refused_with_a_clear_error_and_nothing_written(app, channel, subtests):
    for case, (content, filename, status, code, message) in BAD_FILES.items():
        with subtests.test(case):
            before = left_behind(app)
            response = channel.upload(content, filename)
            assert_refused(app, channel, response, before, status, code, message)


def test_raw_multipart_file_names_are_refused_and_nothing_written(app, channel, subtests):
    for case, (raw_name, status, code, message) in BAD_RAW_NAMES.items():
        with subtests.test(case):
            before = left_behind(app)
            response = channel.post(channel.multipart(raw_name, ESSAY), hostile.multipart_type())
            assert_refused(app, channel, response, before, status, code, message)


def test_multipart_without_a_boundary_is_refused(app, channel):
    before = left_behind(app)
    response = channel.post(channel.multipart(b"essay.txt", ESSAY), "multipart/form-data")
    assert_refused(app, channel, response, before, 400, "unreadable_upload", "could not be read")


# Werkzeug drops the file part it was spooling when the body breaks off, without closing it
# (garbage collection frees it; nothing is left on disk).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_multipart_body_cut_before_its_end_is_refused(app, channel):
    before = left_behind(app)
    body = channel.multipart(b"essay.txt", ESSAY * 100)
    response = channel.post(body[: len(body) - 200], hostile.multipart_type())
    assert_refused(app, channel, response, before, 400, "unreadable_upload", "could not be read")


def test_client_that_stops_sending_before_its_content_length_is_refused(app, channel):
    before = left_behind(app)
    body = channel.multipart(b"essay.txt", ESSAY * 1000)
    sent = body[: len(body) // 2]
    response = channel.post(None, hostile.multipart_type(), environ={
        "wsgi.input": io.BytesIO(sent), "CONTENT_LENGTH": str(len(body))})
    assert response.status_code == 400
    assert left_behind(app) == before


def test_body_that_is_not_a_multipart_form_is_refused(app, channel, subtests):
    for case, (body, content_type) in NOT_MULTIPART.items():
        with subtests.test(case):
            before = left_behind(app)
            response = channel.post(body, content_type)
            assert_refused(app, channel, response, before, 415, "not_multipart",
                           "multipart/form-data")


def test_multipart_form_without_a_file_part_is_told_to_choose_one(app, channel):
    before = left_behind(app)
    body = channel.multipart(b"essay.txt", ESSAY).replace(b'name="file"', b'name="document"')
    response = channel.post(body, hostile.multipart_type())
    assert_refused(app, channel, response, before, 400, "no_file", "Choose a file")


def test_huge_text_file_over_the_assignment_limit_is_refused_with_413(app, channel):
    before = left_behind(app)
    huge = b"All work and no play makes a dull essay.\n" * (3 * 1024 * 1024 // 41)
    response = channel.upload(huge, "essay.txt")
    assert_refused(app, channel, response, before, 413, "too_large", "at most 2 MB")


def test_body_over_the_server_limit_is_refused_with_413_before_it_is_read(app, channel):
    before = left_behind(app)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    response = channel.upload(b"x" * (2 * 1024 * 1024), "essay.txt")
    assert_refused(app, channel, response, before, 413, "too_large",
                   f"at most {app.config['MAX_UPLOAD_MB']} MB")


def test_form_of_thousands_of_parts_is_refused_before_any_is_stored(app, channel):
    before = left_behind(app)
    parts = "".join(f"--{hostile.BOUNDARY}\r\nContent-Disposition: form-data; name=\"f{n}\"\r\n"
                    f"\r\nx\r\n" for n in range(5000)).encode()
    response = channel.post(parts + channel.multipart(b"essay.txt", ESSAY),
                            hostile.multipart_type())
    assert response.status_code == 413
    assert left_behind(app) == before


def test_idempotency_key_longer_than_documented_is_refused(app, client, auth, world):
    before = left_behind(app)
    response = upload_api(client, auth.token("alice@uni.test"), world.essay.id, ESSAY,
                          "essay.txt", key="k" * 101)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_idempotency_key"
    assert left_behind(app) == before


# --- accepted, then dealt with by the pipeline ------------------------------------------------

@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    server = ClamdServer(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


@pytest.fixture(params=["clamd", "built-in"])
def scanner(request, app):
    if request.param == "clamd":
        app.config.update(CLAMD_SOCKET=str(request.getfixturevalue("clamd").socket),
                          CLAMD_URL=None)
    else:
        app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)
    return request.param


@pytest.fixture
def owner(app, client, world):
    """Alice in a browser of her own, to watch her submissions as she would."""
    browser = app.test_client()
    Auth(browser).login("alice@uni.test")
    return browser


def submit(client, auth, assignment, content, filename):
    response = upload_api(client, auth.token("alice@uni.test"), assignment.id, content, filename)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def processed(owner, submission_id, seconds=60):
    """Run every queued job, bounded in time, and return the submission as its owner sees it."""
    started = time.monotonic()
    run_jobs()
    assert time.monotonic() - started < seconds
    view = owner.get(f"/api/v1/submissions/{submission_id}").get_json()
    view["step"] = {step["name"]: step for step in view["steps"]}
    return view


def served(owner, submission_id, what):
    # Read in full inside the block, so the file behind the response is closed.
    with owner.get(f"/submissions/{submission_id}/{what}") as response:
        response.get_data()
    return response


def assert_rejected_unread(app, owner, view, detail):
    assert view["status"] == "rejected"
    assert view["step"]["scan"]["status"] == "failed"
    assert detail in view["step"]["scan"]["detail"]
    assert {name for name, step in view["step"].items() if step["status"] == "skipped"} == {
        "store", "plagiarism", "admin_sync", "email", "thumbnail"}
    assert served(owner, view["id"], "file").status_code == 404
    assert not (Path(app.config["STORAGE_DIR"]) / "objects").exists()


@pytest.mark.slow
def test_zip_bomb_is_rejected_quickly_without_being_unpacked(app, owner, client, auth, world,
                                                              scanner):
    bomb = hostile.zip_bomb(copies=8, inner_mib=1024)
    assert len(bomb) < 64 * 1024  # eight GiB of zeros behind a file of a few KB
    submission_id = submit(client, auth, world.essay, bomb, "coursework.zip")
    view = processed(owner, submission_id, seconds=30)
    assert_rejected_unread(app, owner, view, "could not be checked completely for viruses")


@pytest.mark.slow
def test_virus_hidden_in_a_zip_behind_a_pdf_is_found(app, owner, client, auth, world, scanner):
    polyglot = hostile.pdf_zip_polyglot({"essay.txt": ESSAY, "tools/eicar.com": samples.EICAR})
    assert samples.EICAR not in polyglot  # only a scanner that inflates the zip can see it
    submission_id = submit(client, auth, world.essay, polyglot, "essay.pdf")
    view = processed(owner, submission_id)
    assert_rejected_unread(app, owner, view, "found Submissions.Test.EICAR")


def test_clean_pdf_with_a_zip_appended_is_kept_byte_for_byte_and_served_as_a_download(
        app, owner, client, auth, world):
    polyglot = hostile.pdf_zip_polyglot({"essay.txt": ESSAY})
    submission_id = submit(client, auth, world.essay, polyglot, "essay.pdf")
    view = processed(owner, submission_id)
    assert view["status"] == "completed"
    download = served(owner, submission_id, "file")
    assert download.status_code == 200
    assert download.data == polyglot
    assert download.mimetype == "application/pdf"
    assert download.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("make, filename, reason", [
    (lambda: hostile.png_declaring(30000, 30000), "sketch.png", "30,000 × 30,000 pixels"),
    (lambda: samples.png_bomb(16000, 16000), "sketch.png", "more than the 50 megapixels"),
    (samples.corrupt_pdf, "essay.pdf", "damaged or not really a PDF"),
    (hostile.truncated_pdf, "essay.pdf", "damaged or not really a PDF"),
    (lambda: b"%PDF-1.7\n", "essay.pdf", "damaged or not really a PDF"),
], ids=["png declaring 30000x30000", "png bomb", "corrupt pdf", "truncated pdf",
        "pdf header only"])
def test_unreadable_or_bomb_picture_completes_without_a_preview_after_one_try(
        app, owner, client, auth, world, make, filename, reason):
    content = make()
    submission_id = submit(client, auth, world.essay, content, filename)
    view = processed(owner, submission_id, seconds=30)
    assert view["status"] == "completed"
    preview = view["step"]["thumbnail"]
    assert (preview["status"], preview["attempts"]) == ("skipped", 1)
    assert preview["detail"].startswith("No preview: ")
    assert reason in preview["detail"]
    assert view["thumbnail_url"] is None
    assert served(owner, submission_id, "thumbnail").status_code == 404
    assert served(owner, submission_id, "file").data == content


@pytest.mark.parametrize("make", [
    pytest.param(lambda: hostile.pdf_with_pages(levels=6, fan_out=10), id="a million pages"),
    pytest.param(lambda: hostile.pdf_image_bomb(mib=384), id="a 384 MB image on its page"),
])
def test_enormous_pdf_is_previewed_from_its_first_page_within_bounds(
        app, owner, client, auth, world, make):
    content = make()
    assert len(content) < 1024 * 1024
    submission_id = submit(client, auth, world.essay, content, "essay.pdf")
    view = processed(owner, submission_id, seconds=30)
    assert view["status"] == "completed"
    assert view["step"]["thumbnail"]["detail"] == "Preview ready"  # as the student reads it
    db.session.remove()
    assert db.session.execute(db.select(StepRun.detail).filter_by(
        submission_id=submission_id, name="thumbnail")).scalar_one() == "Preview ready (first page)"
    assert all(step["attempts"] <= 1 for step in view["steps"])
    thumbnail = served(owner, submission_id, "thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/png"


def test_office_file_whose_text_inflates_past_the_limit_is_not_unpacked(
        app, owner, client, auth, world):
    bomb = hostile.zip_of_zeros(90, name="word/document.xml")
    submission_id = submit(client, auth, world.essay, bomb, "essay.docx")
    view = processed(owner, submission_id, seconds=30)
    assert view["status"] == "completed"
    assert view["step"]["plagiarism"]["attempts"] == 1
    assert view["step"]["plagiarism"]["status"] in ("succeeded", "skipped")


def test_strange_but_harmless_names_are_kept_exactly_and_never_used_as_paths(
        app, owner, client, auth, world):
    names = ['essay "final"; filename=evil.txt', "%2e%2e%2fpasswd.txt", "Résumé – 論文 📝.txt",
             "CON.txt", "essay.pdf.txt", "<img src=x onerror=alert(1)>.txt"]
    headers = auth.token("alice@uni.test")
    url = f"/api/v1/assignments/{world.essay.id}/submissions"
    sent = {}
    for name in names:
        # Sent raw, with the quoted-string escape a careful client uses for '"'.
        quoted = name.encode().replace(b'"', b'\\"')
        response = client.post(url, headers=headers, content_type=hostile.multipart_type(),
                               data=hostile.multipart(filename=quoted, content=ESSAY + quoted))
        assert response.status_code == 202, response.get_json()
        sent[response.get_json()["id"]] = (name, ESSAY + quoted)
    run_jobs()
    objects = (Path(app.config["STORAGE_DIR"]) / "objects").resolve()
    for submission_id, (name, content) in sent.items():
        view = owner.get(f"/api/v1/submissions/{submission_id}").get_json()
        assert (view["status"], view["filename"]) == ("completed", name)
        stored = Path(db.session.get(Submission, submission_id).stored_path).resolve()
        assert stored.is_relative_to(objects) and stored.name == view["sha256"]
        download = served(owner, submission_id, "file")
        assert download.data == content
        disposition = parse_options_header(download.headers["Content-Disposition"])
        assert disposition == ("attachment", {"filename": name})
        page = owner.get(f"/submissions/{submission_id}").get_data(as_text=True)
        assert str(escape(name)) in page and "<img src=x" not in page
