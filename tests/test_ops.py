import io
import logging
import re
import time

import pytest
import sqlalchemy as sa
from rq import Queue

from app.extensions import db, get_redis
from app.models import Submission
from tests.clamd import ClamdServer
from tests.conftest import Auth, Client, run_jobs
from tests.services import free_port

STEPS = ("scan", "store", "plagiarism", "admin_sync", "email", "thumbnail")


def scrape(client):
    """The /metrics page as {'name{labels}': value}, checked to be valid text exposition;
    read as Prometheus does, with the bearer token METRICS_TOKEN names."""
    client.application.config["METRICS_TOKEN"] = "scrape-token"
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for line in response.get_data(as_text=True).splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) submissions_\w+ .+", line), line
            continue
        match = re.fullmatch(r'(submissions_\w+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? '
                             r"(\S+)", line)
        assert match, line
        samples[match.group(1) + labels_in_order(match.group(2))] = float(match.group(3))
    return samples


LABEL_ORDER = ("queue", "step", "outcome", "le")


def labels_in_order(text):
    """A sample's labels in one order, whatever order the page wrote them in (Prometheus reads
    them as a set)."""
    if not text:
        return ""
    labels = re.findall(r'([a-z_]+)="([^"]*)"', text)
    labels.sort(key=lambda label: LABEL_ORDER.index(label[0]))
    return "{" + ",".join(f'{name}="{value}"' for name, value in labels) + "}"


def essay_id(world):
    # The primary key of the fixture's assignment, even once its session is gone.
    return sa.inspect(world.essay).identity[0]


def upload(app, world, content, name):
    client = Client(app, app.response_class)
    return client.post(
        f"/api/v1/assignments/{essay_id(world)}/submissions",
        data={"file": (io.BytesIO(content), name)}, headers=Auth(client).token("alice@uni.test"),
        content_type="multipart/form-data",
    )


def test_healthz_answers_even_when_dependencies_are_down(app, client):
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_database_and_redis_answer(app, client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"database": "ok", "redis": "ok", "clamd": "not configured"}


def test_readyz_names_redis_when_it_is_unreachable(app, client):
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.get_json()
    assert body["failed"] == ["redis"]
    assert body["database"] == "ok"
    assert body["redis"].startswith("failed: ConnectionError")


def test_readyz_names_clamd_when_its_socket_is_missing(app, client, tmp_path):
    app.config["CLAMD_SOCKET"] = str(tmp_path / "no-clamd.sock")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["failed"] == ["clamd"]
    assert response.get_json()["redis"] == "ok"


@pytest.mark.slow
def test_readyz_reaches_a_real_clamd_by_socket_and_by_tcp(app, client, tmp_path):
    clamd = ClamdServer(tmp_path / "clamd").start()
    try:
        app.config["CLAMD_SOCKET"] = str(clamd.socket)
        assert client.get("/readyz").get_json()["clamd"] == "ok"
        app.config["CLAMD_SOCKET"] = None
        app.config["CLAMD_URL"] = clamd.url
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["clamd"] == "ok"
    finally:
        clamd.stop()


def test_metrics_move_when_uploads_are_taken_and_jobs_run(app, client, world):
    before = scrape(client)
    assert before['submissions_intake_total{outcome="accepted"}'] == 0
    assert before['submissions_queue_depth{queue="scan"}'] == 0
    assert before['submissions_step_duration_seconds_count{step="scan"}'] == 0
    assert before["submissions_open_event_streams"] == 0

    for n in range(2):
        assert upload(app, world, f"essay {n} text\n".encode(), f"e{n}.txt").status_code == 202
    assert upload(app, world, b"MZ\x90\x00", "tool.exe").status_code == 415
    queued = scrape(client)
    assert queued['submissions_intake_total{outcome="accepted"}'] == 2
    assert queued['submissions_intake_total{outcome="type_not_allowed"}'] == 1
    assert queued['submissions_queue_depth{queue="scan"}'] == 2
    assert queued['submissions_queue_oldest_job_age_seconds{queue="scan"}'] >= 0

    run_jobs()
    done = scrape(client)
    assert done['submissions_queue_depth{queue="scan"}'] == 0
    assert done['submissions_step_outcomes_total{step="scan",outcome="succeeded"}'] == 2
    assert done['submissions_step_outcomes_total{step="admin_sync",outcome="skipped"}'] == 2
    for step in STEPS:
        attempts = sum(value for key, value in done.items()
                       if key.startswith(f'submissions_step_outcomes_total{{step="{step}",'))
        assert attempts == 2, step
        count = done[f'submissions_step_duration_seconds_count{{step="{step}"}}']
        assert count == 2
        assert done[f'submissions_step_duration_seconds_bucket{{step="{step}",le="+Inf"}}'] == 2
        buckets = [value for key, value in done.items()
                   if key.startswith(f'submissions_step_duration_seconds_bucket{{step="{step}",')]
        assert buckets == sorted(buckets)
    assert done['submissions_step_duration_seconds_sum{step="scan"}'] > 0


@pytest.mark.slow
def test_metrics_count_retries_and_failures_per_step(app, client, world):
    app.config["ADMIN_SYNC_URL"] = f"http://127.0.0.1:{free_port()}/records"
    app.config["ADMIN_SYNC_SECRET"] = "records-secret"
    assert upload(app, world, b"an essay\n", "essay.txt").status_code == 202
    run_jobs()
    assert db.session.execute(db.select(Submission)).scalar_one().status == "needs_attention"
    samples = scrape(client)
    assert samples['submissions_step_outcomes_total{step="admin_sync",outcome="retrying"}'] == 7
    assert samples['submissions_step_outcomes_total{step="admin_sync",outcome="failed"}'] == 1
    assert samples['submissions_queue_failed_jobs{queue="external"}'] == 1
    assert samples['submissions_step_outcomes_total{step="email",outcome="failed"}'] == 0


def test_step_and_roll_up_log_lines_carry_submission_and_job_ids(app, world, caplog):
    caplog.set_level(logging.DEBUG)  # the roll-up, every few seconds, speaks at DEBUG
    assert upload(app, world, b"an essay\n", "essay.txt").status_code == 202
    Queue("maintenance", connection=get_redis()).enqueue("jobs.rollup.roll_up")
    run_jobs()
    lines = [record.getMessage() for record in caplog.records]
    step_lines = [line for line in lines if line.startswith("event=step ")]
    assert len(step_lines) >= 6 * 3
    for line in step_lines:
        assert re.search(r"submission_id=\d+ .*job_id=[0-9a-f]{32}", line), line
    rollup = [line for line in lines if line.startswith("event=rollup")]
    assert rollup and re.search(r"job_id=\w+", rollup[0]) and "job_id=None" not in rollup[0]
