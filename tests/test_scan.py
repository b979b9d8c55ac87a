import re
import time
from pathlib import Path

import pytest
from flask import current_app
from rq import SimpleWorker

from app.extensions import db, get_redis
from app.models import Submission
from app.services import clamav
from app.services.storage import storage_for
from app.steps import STEP_BY_NAME
from jobs.runner import run_step
from scripts import clamd_local
from tests import samples
from tests.clamd import ClamdServer
from tests.conftest import Auth, csrf_from, run_jobs
from tests.helpers import only_submission, upload_api, upload_form

CLEAN = b"def mean(xs):\n    return sum(xs) / len(xs)\n"


@pytest.fixture(scope="session")
def clamd(tmp_path_factory):
    server = ClamdServer(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


@pytest.fixture(params=["unix socket", "tcp"])
def with_clamd(request, app, clamd):
    if request.param == "tcp":
        app.config.update(CLAMD_SOCKET=None, CLAMD_URL=clamd.url)
    else:
        app.config.update(CLAMD_SOCKET=str(clamd.socket), CLAMD_URL=None)
    return clamd


@pytest.fixture
def without_clamd(app):
    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)


def submit(client, auth, world, content, filename):
    response = upload_api(client, auth.token("alice@uni.test"), world.essay.id, content, filename)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def seen_by(client, auth, email, submission_id):
    # A client of its own: the shared one may hold a session, and then the API wants CSRF.
    api = current_app.test_client()
    headers = Auth(api).token(email)
    return api.get(f"/api/v1/submissions/{submission_id}", headers=headers).get_json()


def steps_of(view):
    return {step["name"]: step for step in view["steps"]}


def assert_rejected_and_quarantined(app, client, auth, submission_id, content, signature):
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    steps = steps_of(view)
    assert view["status"] == "rejected"
    assert steps["scan"]["status"] == "failed"
    assert signature in steps["scan"]["detail"]
    assert steps["scan"]["detail"].startswith("Not accepted")
    others = {name: step["status"] for name, step in steps.items() if name != "scan"}
    assert others == dict.fromkeys(
        ("store", "plagiarism", "admin_sync", "email", "thumbnail"), "skipped")
    assert view["thumbnail_url"] is None

    storage = Path(app.config["STORAGE_DIR"])
    quarantined = [p for p in (storage / "quarantine").iterdir()]
    assert [p.read_bytes() for p in quarantined] == [content]
    assert not list((storage / "incoming").iterdir())
    assert not (storage / "objects").exists()

    for email in ("alice@uni.test", "sam@uni.test"):
        viewer = app.test_client()
        Auth(viewer).login(email)
        page = viewer.get(f"/submissions/{submission_id}").get_data(as_text=True)
        assert signature in page
        assert f"/submissions/{submission_id}/file" not in page
        assert viewer.get(f"/submissions/{submission_id}/file").status_code == 404
        assert viewer.get(f"/submissions/{submission_id}/thumbnail").status_code == 404


def test_clean_file_passes_clamd_and_completes(client, auth, world, with_clamd):
    submission_id = submit(client, auth, world, CLEAN, "stats.py")
    run_jobs()
    view = seen_by(client, auth, "sam@uni.test", submission_id)
    assert view["status"] == "completed"
    assert steps_of(view)["scan"]["detail"] == "No threats found; scanned by ClamAV (clamd)"


@pytest.mark.parametrize("content, filename, signature", [
    (samples.EICAR, "eicar.txt", "Submissions.Test.EICAR"),
    (samples.EICAR + b"\n", "eicar.txt", "Submissions.Test.EICAR.Body"),
    (samples.zip_of({"work/readme.txt": b"my work\n", "work/eicar.com": samples.EICAR}),
     "work.zip", "Submissions.Test.EICAR"),
], ids=["plain", "trailing newline", "inside a zip"])
def test_clamd_rejects_eicar_and_quarantines_it(app, client, auth, world, with_clamd, content,
                                                filename, signature):
    auth.login("alice@uni.test")
    assert upload_form(client, world.essay.id, content, filename).status_code == 303
    run_jobs()
    submission = only_submission()
    assert submission.status_detail.startswith("Not accepted: ClamAV (clamd) found " + signature)
    assert_rejected_and_quarantined(app, client, auth, submission.id, content, signature)


def test_virus_nested_deeper_than_clamd_unpacks_is_not_accepted(client, auth, world, with_clamd):
    submission_id = submit(client, auth, world, samples.nested_zip(20, "eicar.com", samples.EICAR),
                           "deep.zip")
    run_jobs()
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    assert view["status"] == "rejected"
    detail = steps_of(view)["scan"]["detail"]
    assert "could not be checked completely" in detail
    assert "nested too deeply" in detail
    assert "Heuristics.Limits.Exceeded.MaxRecursion" in detail


@pytest.mark.slow
def test_virus_past_what_clamd_unpacks_of_a_zip_member_is_not_accepted(client, auth, world,
                                                                       with_clamd):
    # clamd reads only the first MaxFileSize (100 MB) of a member and calls the file clean.
    hidden = samples.zip_bomb(150, tail=samples.EICAR)
    submission_id = submit(client, auth, world, hidden, "data.zip")
    run_jobs()
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    assert view["status"] == "rejected"
    detail = steps_of(view)["scan"]["detail"]
    assert "could not be checked completely" in detail
    assert "a file inside it is too large for the scanner" in detail
    assert "Heuristics.Limits.Exceeded.MaxFileSize" in detail


def test_built_in_scanner_runs_without_clamd_and_says_so(client, auth, world, without_clamd):
    submission_id = submit(client, auth, world, CLEAN, "stats.py")
    run_jobs()
    view = seen_by(client, auth, "sam@uni.test", submission_id)
    assert view["status"] == "completed"
    assert steps_of(view)["scan"]["detail"] == (
        "No threats found; scanned by the built-in hash-signature scanner (no clamd configured)")


@pytest.mark.parametrize("content, filename", [
    (samples.EICAR, "eicar.txt"),
    (samples.zip_of({"notes.txt": b"notes\n", "sub/eicar.com": samples.EICAR}), "work.zip"),
    (samples.nested_zip(3, "eicar.com", samples.EICAR), "nested.zip"),
], ids=["plain", "inside a zip", "zip in a zip"])
def test_built_in_scanner_finds_the_hash_signature(app, client, auth, world, without_clamd,
                                                   content, filename):
    submission_id = submit(client, auth, world, content, filename)
    run_jobs()
    assert_rejected_and_quarantined(app, client, auth, submission_id, content,
                                    "Submissions.Test.EICAR.Hash")
    detail = steps_of(seen_by(client, auth, "sam@uni.test", submission_id))["scan"]["detail"]
    assert "built-in hash-signature scanner" in detail


@pytest.mark.parametrize("make, reason", [
    pytest.param(lambda: samples.zip_bomb(150), "a file inside it is too large",
                 marks=pytest.mark.slow),
    (lambda: samples.nested_zip(20, "eicar.com", samples.EICAR), "nested too deeply"),
], ids=["zip bomb", "deep nesting"])
def test_built_in_scanner_stops_at_its_limits(client, auth, world, without_clamd, make, reason):
    submission_id = submit(client, auth, world, make(), "bomb.zip")
    started = time.monotonic()
    run_jobs()
    assert time.monotonic() - started < 10
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    assert view["status"] == "rejected"
    assert reason in steps_of(view)["scan"]["detail"]


@pytest.mark.slow
def test_scan_rerun_after_quarantining_but_before_recording_still_rejects(app, client, auth,
                                                                          world, without_clamd):
    submission_id = submit(client, auth, world, samples.EICAR, "eicar.txt")
    submission = db.session.get(Submission, submission_id)
    # The worker moved the file to quarantine, then died before the database heard of it.
    storage = storage_for(app)
    quarantined = storage.quarantine_path(submission.incoming_path, submission_id)
    quarantined.parent.mkdir(parents=True)
    Path(submission.incoming_path).rename(quarantined)

    run_jobs()
    assert_rejected_and_quarantined(app, client, auth, submission_id, samples.EICAR,
                                    "Submissions.Test.EICAR.Hash")
    assert db.session.get(Submission, submission_id).incoming_path == str(quarantined)


def run_one_scan():
    SimpleWorker(["scan"], connection=get_redis()).work(
        burst=True, max_jobs=1, logging_level="WARNING")
    db.session.remove()


@pytest.mark.slow
def test_scan_waits_for_clamd_that_is_down_then_succeeds(app, client, auth, world,
                                                         tmp_path):
    later = ClamdServer(tmp_path / "clamd")
    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=later.url)
    submission_id = submit(client, auth, world, CLEAN, "stats.py")

    run_one_scan()
    view = seen_by(client, auth, "sam@uni.test", submission_id)
    scan = steps_of(view)["scan"]
    assert (view["status"], scan["status"], scan["attempts"]) == ("processing", "retrying", 1)
    assert "trying again" in scan["detail"]
    assert f"clamd is unreachable at 127.0.0.1:{later.port}" in scan["error"]
    assert steps_of(view)["store"]["status"] == "pending"

    later.start()
    try:
        run_jobs()
    finally:
        later.stop()
    view = seen_by(client, auth, "sam@uni.test", submission_id)  # staff see the scanner
    scan = steps_of(view)["scan"]
    assert view["status"] == "completed"
    assert (scan["status"], scan["attempts"]) == ("succeeded", 2)
    assert scan["detail"] == "No threats found; scanned by ClamAV (clamd)"


@pytest.mark.slow
def test_scan_gives_up_when_clamd_stays_down_and_never_falls_back(app, client, auth, world,
                                                                  tmp_path):
    app.config.update(CLAMD_SOCKET=str(tmp_path / "nothing.sock"), CLAMD_URL=None)
    submission_id = submit(client, auth, world, samples.EICAR, "eicar.txt")
    run_jobs()
    view = seen_by(client, auth, "sam@uni.test", submission_id)
    scan = steps_of(view)["scan"]
    assert view["status"] == "needs_attention"
    assert (scan["status"], scan["attempts"]) == ("failed", STEP_BY_NAME["scan"].max_attempts)
    assert "clamd is unreachable at unix socket" in scan["error"]
    assert steps_of(view)["store"]["status"] == "pending"
    assert not (Path(app.config["STORAGE_DIR"]) / "objects").exists()


def test_file_over_the_stream_limit_is_scanned_by_path_over_the_unix_socket(clamd, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(100_000) + samples.EICAR + bytes(100_000))
    scanner = clamav.ClamdScanner(socket_path=str(clamd.socket), stream_max_bytes=64 * 1024)
    result = scanner.scan(big)
    assert (result.infected, result.signature) == (True, "Submissions.Test.EICAR.Body.UNOFFICIAL")
    # clamd names the file it opened itself; a stream would be logged as "instream".
    log = (Path(clamd.workdir) / "clamd.log").read_text()
    assert f"{big}: Submissions.Test.EICAR.Body.UNOFFICIAL FOUND" in log


def test_file_over_the_stream_limit_is_refused_clearly_over_tcp(clamd, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 * clamav.MiB))
    scanner = clamav.ClamdScanner.from_url(clamd.url, stream_max_bytes=clamav.MiB)
    with pytest.raises(clamav.ScanFailed, match="over clamd's stream limit of 1 MB"):
        scanner.scan(big)


def test_clamd_with_a_lower_stream_limit_than_assumed_is_reported_as_such(tmp_path):
    strict = ClamdServer(tmp_path / "clamd", StreamMaxLength="1M").start()
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(bytes(3 * clamav.MiB))
        scanner = clamav.ClamdScanner(socket_path=str(strict.socket))
        with pytest.raises(clamav.ScanFailed, match="StreamMaxLength is lower than the 100 MB"):
            scanner.scan(big)
    finally:
        strict.stop()


def test_scanner_for_picks_clamd_when_configured_else_the_built_in():
    assert isinstance(clamav.scanner_for({"CLAMD_SOCKET": "/run/clamd.sock"}), clamav.ClamdScanner)
    tcp = clamav.scanner_for({"CLAMD_URL": "tcp://scanner.internal:3311"})
    assert (tcp.host, tcp.port, tcp.socket_path) == ("scanner.internal", 3311, None)
    assert isinstance(clamav.scanner_for({}), clamav.HashSignatureScanner)
    with pytest.raises(ValueError, match="tcp://host:3310"):
        clamav.scanner_for({"CLAMD_URL": "scanner.internal:3310"})


def test_shipped_clamd_config_matches_the_limits_the_scanners_assume():
    config = clamd_local.CONFIG_TEMPLATE.read_text()
    settings = dict(re.findall(r"^(\w+) (\S+)$", config, re.MULTILINE))
    mib = {"100M": 100 * clamav.MiB, "200M": 200 * clamav.MiB}
    assert mib[settings["StreamMaxLength"]] == clamav.STREAM_MAX_BYTES
    assert mib[settings["MaxScanSize"]] == clamav.MAX_SCAN_BYTES
    assert mib[settings["MaxFileSize"]] == clamav.MAX_FILE_BYTES
    assert int(settings["MaxRecursion"]) == clamav.MAX_RECURSION
    assert int(settings["MaxFiles"]) == clamav.MAX_FILES
    assert settings["AlertExceedsMax"] == "yes"


def test_private_clamd_starts_from_a_directory_too_deep_for_a_unix_socket(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    assert len(str(deep / "clamd.sock")) > clamd_local.MAX_SOCKET_PATH
    server = ClamdServer(deep).start()
    try:
        assert len(str(server.socket)) <= clamd_local.MAX_SOCKET_PATH
        scanner = clamav.ClamdScanner(socket_path=str(server.socket))
        eicar = tmp_path / "eicar.txt"
        eicar.write_bytes(samples.EICAR)
        assert scanner.scan(eicar).infected
    finally:
        server.stop()


def test_a_late_second_run_of_the_scan_keeps_the_rejection_it_recorded(app, client, auth, world):
    submission_id = submit(client, auth, world, samples.EICAR, "eicar.txt")
    run_jobs()
    # The same step run again late (a duplicate of its job): the file stays rejected, with why.
    assert run_step(submission_id, "scan") == "skipped"
    db.session.remove()
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    assert view["status"] == "rejected"
    assert steps_of(view)["scan"]["status"] == "failed"
    assert "EICAR" in steps_of(view)["scan"]["detail"]


def test_staff_cannot_run_a_rejected_files_scan_again(app, client, auth, world):
    submission_id = submit(client, auth, world, samples.EICAR, "eicar.txt")
    run_jobs()
    staff = app.test_client()
    Auth(staff).login("sam@uni.test")
    page = staff.get(f"/submissions/{submission_id}").get_data(as_text=True)
    form = re.search(rf'<form[^>]*action="/submissions/{submission_id}/steps/scan/requeue"[^>]*>',
                     page).group(0)
    assert " hidden" in form

    response = staff.post(f"/submissions/{submission_id}/steps/scan/requeue",
                          data={"csrf_token": csrf_from(page)})
    assert response.status_code == 303
    assert "Virus scan is not run again: the file was not accepted." in staff.get(
        response.headers["Location"]).get_data(as_text=True)
    run_jobs()
    view = seen_by(client, auth, "alice@uni.test", submission_id)
    assert view["status"] == "rejected"
    assert steps_of(view)["scan"]["status"] == "failed"
    assert "EICAR" in steps_of(view)["scan"]["detail"]
