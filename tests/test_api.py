import hashlib

from tests.conftest import run_jobs
from tests.helpers import submission_count, upload_api

ESSAY = b"An essay sent through the API.\n"


def test_token_for_good_credentials_and_clear_errors_otherwise(client, world):
    good = client.post("/api/v1/tokens", json={"email": "alice@uni.test",
                                                "password": "correct horse battery"})
    assert good.status_code == 201 and len(good.get_json()["token"]) > 30
    bad = client.post("/api/v1/tokens", json={"email": "alice@uni.test", "password": "x"})
    assert bad.status_code == 401
    assert bad.get_json()["error"]["code"] == "invalid_credentials"
    garbage = client.post("/api/v1/tokens", data="not json", content_type="text/plain")
    assert garbage.status_code == 400 and "message" in garbage.get_json()["error"]


def test_api_without_credentials_is_401_json(client, world):
    response = client.get("/api/v1/assignments")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    bogus = client.get("/api/v1/assignments", headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 401


def test_assignments_lists_only_my_courses(client, auth, world):
    headers = auth.token("alice@uni.test")
    listed = client.get("/api/v1/assignments", headers=headers).get_json()["assignments"]
    assert [(a["course"], a["title"], a["open"]) for a in listed] == [("CS101", "Essay", True)]
    assert set(listed[0]["allowed_types"]) >= {"pdf", "txt"}


def test_submit_returns_202_location_and_the_submission(client, auth, world):
    headers = auth.token("alice@uni.test")
    response = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/submissions/{body['id']}"
    assert body["sha256"] == hashlib.sha256(ESSAY).hexdigest()
    assert body["size"] == len(ESSAY) and body["filename"] == "essay.txt"
    assert body["status"] == "received" and body["late"] is False and body["grade"] is None
    assert [s["name"] for s in body["steps"]] == [
        "scan", "store", "plagiarism", "admin_sync", "email", "thumbnail"]
    assert body["received_at"].endswith("Z")

    run_jobs()
    done = client.get(response.headers["Location"], headers=headers).get_json()
    assert done["status"] == "completed"
    assert done["thumbnail_url"] == f"/submissions/{body['id']}/thumbnail"
    assert done["similarity"] == 0
    assert all("error" not in step for step in done["steps"])


def test_same_idempotency_key_returns_the_same_submission(client, auth, world):
    headers = auth.token("alice@uni.test")
    first = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt", key="abc")
    again = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt", key="abc")
    other = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt", key="def")
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"] != other.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert submission_count() == 2


def test_api_bad_upload_is_json_error_and_writes_nothing(client, auth, world):
    headers = auth.token("alice@uni.test")
    empty = upload_api(client, headers, world.essay.id, b"", "essay.txt")
    assert empty.status_code == 400 and empty.get_json()["error"]["code"] == "empty_file"
    spoofed = upload_api(client, headers, world.essay.id, b"\x89PNG\r\n\x1a\n....", "essay.pdf")
    assert spoofed.status_code == 415
    assert spoofed.get_json()["error"]["code"] == "type_mismatch"
    elsewhere = upload_api(client, headers, world.sketch.id, b"%PDF-1.4", "a.pdf")
    assert elsewhere.status_code == 404
    missing = upload_api(client, headers, 999999, b"%PDF-1.4", "a.pdf")
    assert missing.status_code == 404
    assert submission_count() == 0


def test_students_cannot_read_each_others_submissions(client, auth, world):
    alice = auth.token("alice@uni.test")
    submitted = upload_api(client, alice, world.essay.id, ESSAY, "essay.txt").get_json()
    url = f"/api/v1/submissions/{submitted['id']}"
    assert client.get(url, headers=auth.token("bob@uni.test")).status_code == 404
    assert client.get(url, headers=auth.token("tess@uni.test")).status_code == 404
    staff_view = client.get(url, headers=auth.token("sam@uni.test"))
    assert staff_view.status_code == 200
    assert all("error" in step for step in staff_view.get_json()["steps"])
    assert client.get("/api/v1/submissions/424242", headers=alice).status_code == 404


def test_session_callers_need_a_csrf_token_for_writes(client, auth, world):
    import io

    auth.login("alice@uni.test")
    assert client.get("/api/v1/assignments").status_code == 200
    response = client.post(f"/api/v1/assignments/{world.essay.id}/submissions",
                           data={"file": (io.BytesIO(ESSAY), "essay.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert submission_count() == 0


def test_openapi_document_describes_the_contract(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    for path in ("/tokens", "/assignments", "/assignments/{assignment_id}/submissions",
                 "/submissions/{submission_id}"):
        assert path in document["paths"]
    required = document["components"]["schemas"]["Submission"]["required"]
    assert {"id", "assignment_id", "status", "filename", "size", "sha256", "received_at",
            "late", "steps", "similarity", "thumbnail_url", "grade"} <= set(required)


def test_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
