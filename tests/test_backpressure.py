import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app import create_app
from app.extensions import db
from app.models import OutboxEmail, Submission
from app.pipeline import queue
from jobs.maintenance import reconcile
from tests.conftest import PASSWORD, ROOT, Client, csrf_from, process_env, run_jobs
from tests.e2e.servers import WebServer
from tests.helpers import only_submission, paused, submission_count, upload_api, upload_form

ESSAY = b"An essay in a busy hour.\n"


def fill_queue(name, count):
    for n in range(count):
        queue(name).enqueue("jobs.runner.run_step", 0, name, job_id=f"filler-{name}-{n}")


def test_intake_answers_503_with_retry_after_when_the_backlog_is_full(app, client, auth, world):
    app.config["INTAKE_MAX_BACKLOG"] = 3
    headers = auth.token("alice@uni.test")
    fill_queue("scan", 4)
    busy = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt", key="spike-1")
    assert busy.status_code == 503
    assert int(busy.headers["Retry-After"]) > 0
    assert busy.get_json()["error"]["code"] == "busy"
    assert submission_count() == 0
    assert not list((Path(app.config["STORAGE_DIR"]) / "incoming").glob("*"))

    queue("scan").empty()
    retried = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt", key="spike-1")
    assert retried.status_code == 202
    assert submission_count() == 1


def test_work_past_scan_and_store_does_not_close_intake(app, client, auth, world):
    # After a spike the later queues hold several jobs per submission, and a slow plagiarism
    # service fills its queue; neither is intake falling behind.
    app.config["INTAKE_MAX_BACKLOG"] = 3
    headers = auth.token("alice@uni.test")
    for name in ("external", "email", "media"):
        fill_queue(name, 4)
    assert upload_api(client, headers, world.essay.id, ESSAY, "essay.txt").status_code == 202

    fill_queue("store", 3)  # with the scan just queued: four submissions wait to be stored
    busy = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt")
    assert busy.status_code == 503
    assert busy.get_json()["error"]["code"] == "busy"
    assert submission_count() == 1


def test_upload_page_tells_the_student_it_will_retry_when_busy(app, client, auth, world):
    app.config["INTAKE_MAX_BACKLOG"] = 0
    fill_queue("scan", 1)
    auth.login("alice@uni.test")
    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert "upload.js" in page
    response = upload_form(client, world.essay.id, ESSAY, "essay.txt")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(app.config["INTAKE_RETRY_AFTER"])
    assert "will be retried shortly" in response.get_data(as_text=True)
    assert submission_count() == 0


def test_intake_keeps_accepting_when_redis_is_down_and_queues_later(app, client, auth, world):
    from app.extensions import get_redis
    from jobs.maintenance import reconcile
    from tests.conftest import run_jobs

    headers = auth.token("alice@uni.test")
    working_url = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"
    app.extensions.pop("submissions_redis", None)
    accepted = upload_api(client, headers, world.essay.id, ESSAY, "essay.txt")
    assert accepted.status_code == 202
    assert accepted.get_json()["steps"][0]["status"] == "queued"

    app.config["REDIS_URL"] = working_url
    app.extensions.pop("submissions_redis", None)
    assert get_redis().llen(queue("scan").key) == 0
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    assert reconcile()["requeued"] == 1
    run_jobs()
    body = client.get(accepted.headers["Location"], headers=headers).get_json()
    assert body["status"] == "completed"


@pytest.mark.slow
def test_upload_during_a_hung_redis_gets_its_receipt_at_once_and_is_processed_after(
        app, auth, world, tmp_path, private_redis):
    headers = auth.token("alice@uni.test")
    web = WebServer(process_env(app), tmp_path / "web.log").start()
    try:
        url = f"{web.url}/api/v1/assignments/{world.essay.id}/submissions"
        with paused(private_redis.process):
            started = time.monotonic()
            # Without a bound, each of the upload's calls to Redis would wait 10 s.
            response = requests.post(url, headers=headers, timeout=120,
                                     files={"file": ("essay.txt", ESSAY)})
            waited = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert waited < 5, f"the receipt took {waited:.1f} s"
    finally:
        web.stop()
    receipt = response.json()
    assert (receipt["status"], receipt["sha256"]) == ("received", only_submission().sha256)
    assert [step["status"] for step in receipt["steps"]] == ["queued"] + ["pending"] * 5

    # Redis answers again; the periodic reconciler finds the scan it was never given.
    app.config["RECONCILE_GRACE_SECONDS"] = 0
    reconcile()
    run_jobs()
    assert db.session.get(Submission, receipt["id"]).status == "completed"
    assert db.session.query(OutboxEmail).count() == 1


def test_database_down_is_a_503_with_retry_after_not_a_500(app, redis_server, tmp_path):
    down = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/gone",
                       "REDIS_URL": redis_server.url, "STORAGE_DIR": str(tmp_path / "s")})
    client = down.test_client()
    api = client.post("/api/v1/assignments/1/submissions", headers={
        "Authorization": "Bearer some-token"}, data={}, content_type="multipart/form-data")
    assert api.status_code == 503
    assert api.headers["Retry-After"]
    assert api.get_json()["error"]["code"] == "unavailable"
    page = client.get("/login")
    assert page.status_code == 200  # the login form needs no database
    with client.session_transaction() as session:
        session["_user_id"] = "1"
    home = client.get("/")
    assert home.status_code == 503
    assert "Briefly unavailable" in home.get_data(as_text=True)
    assert not list((tmp_path / "s").glob("incoming/*"))


def test_one_student_flooding_intake_is_rate_limited(app, client, auth, world):
    app.config["INTAKE_RATE_LIMIT"] = (3, 60)
    alice = auth.token("alice@uni.test")
    answers = [upload_api(client, alice, world.essay.id, ESSAY, "essay.txt").status_code
               for _ in range(5)]
    assert answers == [202, 202, 202, 429, 429]
    limited = upload_api(client, alice, world.essay.id, ESSAY, "essay.txt")
    assert 0 < int(limited.headers["Retry-After"]) <= 61
    assert "Too many uploads" in limited.get_json()["error"]["message"]
    bob = auth.token("bob@uni.test")
    assert upload_api(client, bob, world.essay.id, ESSAY, "essay.txt").status_code == 202


def test_rate_limits_and_retry_after_are_set_from_the_environment(app, auth, world, tmp_path):
    env = process_env(app, INTAKE_RATE_LIMIT="2/60", INTAKE_MAX_BACKLOG="2",
                      INTAKE_RETRY_AFTER="9")
    web = WebServer(env, tmp_path / "web.log").start()
    url = f"{web.url}/api/v1/assignments/{world.essay.id}/submissions"
    try:
        def upload(who):
            return requests.post(url, headers=auth.token(who), timeout=10,
                                 files={"file": ("essay.txt", ESSAY)})

        alice = [upload("alice@uni.test") for _ in range(3)]
        fill_queue("scan", 3)
        busy = upload("bob@uni.test")
    finally:
        web.stop()
    assert [answer.status_code for answer in alice] == [202, 202, 429]
    assert 0 < int(alice[2].headers["Retry-After"]) <= 61
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "9"


@pytest.mark.parametrize("name, value", [
    ("INTAKE_RATE_LIMIT", "lots"), ("INTAKE_RATE_LIMIT", "20"), ("INTAKE_RATE_LIMIT", "0/60"),
    ("INTAKE_RATE_LIMIT", "20/"), ("LOGIN_RATE_LIMIT", "10 per minute"),
    ("INTAKE_RETRY_AFTER", "0"), ("INTAKE_RETRY_AFTER", "soon"),
    ("REDIS_REQUEST_TIMEOUT", "0"), ("REDIS_REQUEST_TIMEOUT", "a second"),
])
def test_a_malformed_limit_stops_the_app_with_the_setting_named(app, name, value):
    env = process_env(app, **{name: value})
    started = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert name in started.stderr and repr(value) in started.stderr


def test_repeated_wrong_passwords_are_rate_limited(app, client, auth, world):
    app.config["LOGIN_RATE_LIMIT"] = (3, 300)
    answers = [auth.login("alice@uni.test", "guess").status_code for _ in range(3)]
    assert answers == [401, 401, 401]
    blocked = auth.login("alice@uni.test")
    assert blocked.status_code == 429
    assert "Too many login attempts" in blocked.get_data(as_text=True)
    token = client.post("/api/v1/tokens", json={"email": "alice@uni.test",
                                                "password": "correct horse battery"})
    assert token.status_code == 429
    assert auth.login("bob@uni.test").status_code == 302


def test_every_database_connection_taken_is_a_503_busy_not_a_500(app, auth, world):
    headers, essay = auth.token("alice@uni.test"), world.essay.id
    settings = ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "STORAGE_DIR", "SECRET_KEY")
    crowded = create_app({**{name: app.config[name] for name in settings},
                          "DB_POOL_SIZE": 1, "DB_MAX_OVERFLOW": 0, "DB_POOL_TIMEOUT": 0})
    crowded.test_client_class = Client
    with crowded.app_context():
        held = db.engine.connect()  # as a long request would hold the process's one connection
        try:
            busy = upload_api(crowded.test_client(), headers, essay, ESSAY, "essay.txt",
                              key="crowded-1")
        finally:
            held.close()
        retried = upload_api(crowded.test_client(), headers, essay, ESSAY, "essay.txt",
                             key="crowded-1")
        db.session.remove()
        db.engine.dispose()
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == str(app.config["INTAKE_RETRY_AFTER"])
    assert busy.get_json()["error"]["code"] == "busy"
    assert retried.status_code == 202
    assert submission_count() == 1


def _start_slow_upload(url, path, headers, content, fields=()):
    """An upload whose client sends half of the body and then stalls."""
    boundary = "slow-upload-boundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
             f"{value}\r\n".encode() for name, value in fields]
    body = b"".join(parts) + (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"slow.txt\"\r\nContent-Type: text/plain\r\n\r\n").encode() \
        + content + f"\r\n--{boundary}--\r\n".encode()
    host, port = url.split("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    head = [f"POST {path} HTTP/1.0", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
            f"Content-Type: multipart/form-data; boundary={boundary}",
            *(f"{name}: {value}" for name, value in headers.items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:len(body) // 2])
    return sock, body[len(body) // 2:]


def _logged_in_page(web, email, path):
    """A browser-like session logged in as `email`, and the page at `path` it was shown."""
    browser = requests.Session()
    login = browser.get(f"{web.url}/login", timeout=10).text
    browser.post(f"{web.url}/login", timeout=10, data={
        "email": email, "password": PASSWORD, "csrf_token": csrf_from(login)})
    return browser, browser.get(f"{web.url}{path}", timeout=10).text


@pytest.mark.slow
@pytest.mark.parametrize("way", ["api", "api_with_session", "page"])
def test_a_slow_upload_holds_no_database_connection_while_its_file_arrives(
        app, auth, world, tmp_path, way):
    env = process_env(app, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=1)
    web = WebServer(env, tmp_path / "web.log").start()
    try:
        bob = auth.token("bob@uni.test")
        if way == "api":
            path = f"/api/v1/assignments/{world.essay.id}/submissions"
            slow, rest = _start_slow_upload(web.url, path, auth.token("alice@uni.test"),
                                            ESSAY * 2000)
        elif way == "api_with_session":
            # A logged-in browser calling the API: its CSRF token comes in the body.
            path = f"/api/v1/assignments/{world.essay.id}/submissions"
            browser, page = _logged_in_page(web, "alice@uni.test", f"/assignments/{world.essay.id}")
            cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
            slow, rest = _start_slow_upload(web.url, path, {"Cookie": cookie}, ESSAY * 2000,
                                            fields=[("csrf_token", csrf_from(page))])
        else:
            path = f"/assignments/{world.essay.id}"
            browser, page = _logged_in_page(web, "alice@uni.test", path)
            cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
            key = re.search(r'name="idempotency_key"[^>]*value="([^"]+)"', page).group(1)
            slow, rest = _start_slow_upload(
                web.url, path, {"Cookie": cookie}, ESSAY * 2000,
                fields=[("csrf_token", csrf_from(page)), ("idempotency_key", key)])
        url = f"{web.url}/api/v1/assignments/{world.essay.id}/submissions"
        # Bob's upload needs the web process's one connection while Alice's is still arriving.
        quick = [requests.post(url, headers=bob, timeout=10,
                               files={"file": (f"quick-{n}.txt", ESSAY)}) for n in range(3)]
        slow.sendall(rest)
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        slow.close()
    finally:
        web.stop()
    assert [response.status_code for response in quick] == [202, 202, 202]
    status = answer.split(b"\r\n", 1)[0]
    # The API answers 202; the page sends the browser on to the receipt.
    assert status.split()[1] == (b"303" if way == "page" else b"202"), answer[:300]
    assert submission_count() == 4


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite+pysqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_needs_no_pool_settings(redis_server, uri):
    memory = create_app({"SQLALCHEMY_DATABASE_URI": uri, "REDIS_URL": redis_server.url})
    with memory.app_context():
        assert db.session.execute(db.select(1)).scalar() == 1
        db.session.remove()


def test_database_servers_and_sqlite_files_get_the_configured_pool(migrated, redis_server):
    sized = create_app({"SQLALCHEMY_DATABASE_URI": migrated, "REDIS_URL": redis_server.url,
                        "DB_POOL_SIZE": 3, "DB_MAX_OVERFLOW": 2, "DB_POOL_TIMEOUT": 2})
    with sized.app_context():
        pool = db.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 2)
