import hashlib
from pathlib import Path

import pytest
from rq import SimpleWorker

from app.extensions import db, get_redis
from app.models import Submission
from app.services.storage import storage_for
from jobs import store
from jobs.runner import run_step
from tests import samples
from tests.conftest import Auth, run_jobs
from tests.helpers import fetch, logged_in, upload_api

ESSAY = "Queues smooth out a deadline spike.\nÉtudiants submit at once.\n".encode()


@pytest.fixture(autouse=True)
def built_in_scanner(app, client):
    # Requesting `client` also gives every app.test_client() the suite's request isolation.
    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)


def submit(app, world, content=ESSAY, filename="essay.txt", student="alice@uni.test"):
    api = app.test_client()
    response = upload_api(api, Auth(api).token(student), world.essay.id, content, filename)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def reload(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id)


def run_scan_only():
    SimpleWorker(["scan"], connection=get_redis()).work(burst=True, logging_level="WARNING")
    db.session.remove()


def storage_files(app, area):
    root = Path(app.config["STORAGE_DIR"]) / area
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_stored_file_is_content_addressed_verified_and_incoming_is_emptied(app, world):
    submission_id = submit(app, world)
    run_jobs()
    submission = reload(submission_id)
    sha256 = hashlib.sha256(ESSAY).hexdigest()
    kept = Path(app.config["STORAGE_DIR"]) / "objects" / sha256[:2] / sha256[2:4] / sha256
    assert submission.status == "completed"
    assert submission.step("store").detail == f"Stored safely; SHA-256 {sha256[:12]}… verified"
    assert Path(submission.stored_path) == kept
    assert kept.read_bytes() == ESSAY
    assert kept.stat().st_mode & 0o222 == 0
    assert submission.incoming_path is None
    assert storage_files(app, "incoming") == []
    assert storage_files(app, "objects") == [kept]


def test_download_is_for_the_owner_and_the_courses_staff_only(app, client, world):
    submission_id = submit(app, world)
    run_jobs()
    url = f"/submissions/{submission_id}/file"

    owner = fetch(logged_in(app, "alice@uni.test"), url)
    assert owner.status_code == 200
    assert owner.data == ESSAY
    assert owner.headers["Content-Disposition"].startswith("attachment")
    assert "essay.txt" in owner.headers["Content-Disposition"]

    assert fetch(logged_in(app, "sam@uni.test"), url).data == ESSAY
    assert fetch(logged_in(app, "root@uni.test"), url).status_code == 200
    assert fetch(logged_in(app, "bob@uni.test"), url).status_code == 404
    assert fetch(logged_in(app, "tess@uni.test"), url).status_code == 404
    assert fetch(logged_in(app, "carol@uni.test"), url).status_code == 404

    anonymous = fetch(client, url)
    assert anonymous.status_code == 302
    assert "/login" in anonymous.headers["Location"]
    assert fetch(logged_in(app, "alice@uni.test"), "/submissions/999999/file").status_code == 404


def test_rejected_submission_is_never_downloadable(app, world):
    submission_id = submit(app, world, samples.EICAR, "eicar.txt")
    run_jobs()
    assert reload(submission_id).status == "rejected"
    for email in ("alice@uni.test", "sam@uni.test", "root@uni.test"):
        assert fetch(logged_in(app, email), f"/submissions/{submission_id}/file").status_code == 404
    assert storage_files(app, "objects") == []


def test_file_is_not_downloadable_before_it_is_stored(app, world):
    submission_id = submit(app, world)
    run_scan_only()
    owner = logged_in(app, "alice@uni.test")
    assert fetch(owner, f"/submissions/{submission_id}/file").status_code == 404
    run_jobs()
    assert fetch(owner, f"/submissions/{submission_id}/file").data == ESSAY


def test_two_submissions_of_the_same_bytes_share_one_stored_object(app, world):
    first = submit(app, world, student="alice@uni.test")
    second = submit(app, world, student="bob@uni.test")
    run_jobs()
    assert reload(first).stored_path == reload(second).stored_path
    assert len(storage_files(app, "objects")) == 1
    assert fetch(logged_in(app, "alice@uni.test"), f"/submissions/{first}/file").data == ESSAY
    assert fetch(logged_in(app, "bob@uni.test"), f"/submissions/{second}/file").data == ESSAY


def crash_mid_copy(storage, submission):
    partial = storage.object_path(submission.sha256).with_name(f"{submission.sha256}.dead.part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(ESSAY[:10])


def crash_after_keeping(storage, submission):
    storage.store(submission.incoming_path, submission.sha256)


def crash_after_removing_incoming(storage, submission):
    storage.store(submission.incoming_path, submission.sha256)
    Path(submission.incoming_path).unlink()


def crash_after_commit(storage, submission):
    submission.stored_path = str(storage.store(submission.incoming_path, submission.sha256))
    Path(submission.incoming_path).unlink()
    submission.incoming_path = None
    db.session.commit()


def damaged_kept_copy(storage, submission):
    kept = storage.object_path(submission.sha256)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"bit rot")


@pytest.mark.slow
@pytest.mark.parametrize("crash", [
    crash_mid_copy, crash_after_keeping, crash_after_removing_incoming, crash_after_commit,
    damaged_kept_copy,
])
def test_store_rerun_after_a_crash_at_any_point_ends_with_the_verified_file(app, world, crash):
    submission_id = submit(app, world)
    run_scan_only()
    storage = storage_for(app)
    crash(storage, reload(submission_id))

    run_jobs()
    submission = reload(submission_id)
    assert submission.status == "completed"
    assert submission.step("store").status == "succeeded"
    assert Path(submission.stored_path).read_bytes() == ESSAY
    assert storage_files(app, "incoming") == []
    owner = logged_in(app, "alice@uni.test")
    assert fetch(owner, f"/submissions/{submission_id}/file").data == ESSAY


def test_running_store_again_after_it_finished_changes_nothing(app, world):
    submission_id = submit(app, world)
    run_jobs()
    submission = reload(submission_id)
    before = (submission.stored_path, submission.step("store").attempts,
              Path(submission.stored_path).stat().st_mtime_ns)

    assert run_step(submission_id, "store") == "already done"
    store.perform(submission, submission.step("store"))
    submission = reload(submission_id)
    assert (submission.stored_path, submission.step("store").attempts,
            Path(submission.stored_path).stat().st_mtime_ns) == before
    assert storage_files(app, "objects") == [Path(submission.stored_path)]


@pytest.mark.slow
def test_received_file_that_no_longer_matches_its_hash_is_never_stored(app, world):
    submission_id = submit(app, world)
    run_scan_only()
    Path(reload(submission_id).incoming_path).write_bytes(b"changed on disk after upload\n")

    run_jobs()
    submission = reload(submission_id)
    store_step = submission.step("store")
    assert submission.status == "needs_attention"
    assert (store_step.status, store_step.attempts) == ("failed", 6)
    assert "SHA-256" in store_step.last_error
    assert submission.sha256 in store_step.last_error
    assert storage_files(app, "objects") == []
    owner = logged_in(app, "alice@uni.test")
    assert fetch(owner, f"/submissions/{submission_id}/file").status_code == 404
