"""A Redis restart (stopped for a while, started again empty on the same port) or a hung Redis
(SIGSTOP: connections accepted, nothing answered) costs the worker and the scheduler a pause, not
their process: each waits for Redis, then carries on."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import Queue, Worker

from app.extensions import db, get_redis
from app.models import Submission
from app.steps import PERIODIC, QUEUES
from jobs.maintenance import scheduler_for
from tests.conftest import ROOT, process_env
from tests.helpers import kill_tree, paused, upload_api, wait_until
from tests.services import RedisServer

pytestmark = pytest.mark.slow

WORKER = [sys.executable, "worker.py"]
SCHEDULER = [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "run-scheduler",
             "--interval", "1"]
# Longer than a worker's Redis socket timeout (RQ sets it to its dequeue timeout plus 10 s, 25 s
# with worker.py's 30 s TTL), after which RQ's own loop gives up on a Redis that does not answer.
HANG_SECONDS = 40


class Process:
    """A real process of the Procfile, its output kept in a file (a pipe nobody reads fills)."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, seconds):
        """SIGTERM; the exit status, or None if the process is still running after `seconds`."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.running():
            kill_tree(self.pid)
            self.popen.wait(10)


@pytest.fixture
def own_redis(app, tmp_path):
    """A Redis of this test's own, which it stops and starts; the app and its processes use it."""
    server = RedisServer(tmp_path / "redis").start()
    app.config["REDIS_URL"] = server.url
    close_client(app)
    yield server
    close_client(app)
    server.stop()


def close_client(app):
    client = app.extensions.pop("submissions_redis", None)
    if client is not None:
        client.close()


@pytest.fixture
def start(app, own_redis, tmp_path):
    started = []

    def start(name, command):
        started.append(Process(command, process_env(app), tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def restart_empty(server, down_for):
    server.stop()
    time.sleep(down_for)
    server.start()


def registered_worker_pids():
    return [worker.pid for worker in Worker.all(connection=get_redis())]


def periodic_jobs_scheduled():
    scheduler = scheduler_for()
    return all(job_id in scheduler for job_id in PERIODIC)


def status_of(submission_id):
    db.session.remove()
    return db.session.get(Submission, submission_id).status


def upload_completes(client, auth, world, process):
    headers = auth.token("alice@uni.test")
    body = upload_api(client, headers, world.essay.id, b"written during the outage\n",
                      "essay.txt").get_json()
    wait_until(lambda: status_of(body["id"]) == "completed", 60,
               lambda: f"the upload after the restart did not complete:\n{process.log()[-3000:]}")


def rode_it_out(worker):
    """The worker's own loop never broke on a Redis error (RQ would log it, then exit)."""
    return "found an unhandled exception" not in worker.log()


def test_worker_and_scheduler_carry_on_after_redis_restarts_empty(app, client, auth, world,
                                                                  own_redis, start):
    worker = start("worker", WORKER)
    scheduler = start("scheduler", SCHEDULER)
    wait_until(lambda: registered_worker_pids() == [worker.pid] and periodic_jobs_scheduled(),
               30, "the worker and the scheduler did not start")

    restart_empty(own_redis, down_for=4)

    wait_until(lambda: registered_worker_pids() == [worker.pid] or not worker.running(), 30,
               "the worker did not register itself again")
    wait_until(lambda: periodic_jobs_scheduled() or not scheduler.running(), 30,
               "the scheduler did not put its periodic jobs back")
    assert worker.running(), worker.log()[-3000:]
    assert scheduler.running(), scheduler.log()[-3000:]
    upload_completes(client, auth, world, worker)
    assert registered_worker_pids() == [worker.pid]
    assert "event=redis_unavailable" in worker.log()
    assert rode_it_out(worker), worker.log()[-3000:]
    assert "event=redis_unavailable" in scheduler.log()
    assert worker.stop(30) == 0, worker.log()[-3000:]
    assert scheduler.stop(30) == 0, scheduler.log()[-3000:]


def test_worker_busy_with_a_job_when_redis_goes_away_carries_on(app, client, auth, world,
                                                               own_redis, start):
    worker = start("worker", WORKER)
    wait_until(lambda: registered_worker_pids() == [worker.pid], 30, "the worker did not start")
    job = Queue("media", connection=get_redis()).enqueue("time.sleep", 6, job_timeout=60)
    wait_until(lambda: job.get_status(refresh=True) == "started", 30, "the job did not start")

    # Longer than the job and than the worker's job monitoring interval, which both touch Redis.
    restart_empty(own_redis, down_for=12)

    wait_until(lambda: registered_worker_pids() == [worker.pid] or not worker.running(), 30,
               "the worker did not register itself again")
    assert worker.running(), worker.log()[-3000:]
    upload_completes(client, auth, world, worker)
    assert "event=redis_unavailable" in worker.log()
    assert rode_it_out(worker), worker.log()[-3000:]
    assert worker.stop(30) == 0, worker.log()[-3000:]


def test_worker_waits_out_a_hung_redis_in_place_then_works(app, client, auth, world, own_redis,
                                                           start):
    worker = start("worker", WORKER)
    wait_until(lambda: registered_worker_pids() == [worker.pid], 30, "the worker did not start")
    # Caught waiting for work, in the blocking dequeue, which the hang must then outlast.
    wait_until(lambda: any(client.get("cmd") == "blpop" for client in get_redis().client_list()),
               30, lambda: f"the worker never waited for work:\n{worker.log()[-3000:]}")

    with paused(own_redis.process):
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline and worker.running():
            time.sleep(0.5)

    assert worker.running(), worker.log()[-3000:]
    # Waited where it was: RQ's loop never gave up, so the worker never had to start afresh.
    assert "quitting" not in worker.log(), worker.log()[-3000:]
    wait_until(lambda: registered_worker_pids() == [worker.pid] or not worker.running(), 60,
               lambda: f"the worker did not answer for itself again:\n{worker.log()[-3000:]}")
    upload_completes(client, auth, world, worker)
    assert "event=redis_unavailable" in worker.log()
    assert "event=worker_restarted" not in worker.log(), worker.log()[-3000:]
    assert worker.stop(30) == 0, worker.log()[-3000:]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "after_a_job"])
def test_sigterm_stops_worker_and_scheduler_promptly_during_a_redis_outage(app, own_redis,
                                                                           start, busy):
    # Not the maintenance queue, so the worker is idle unless the test gives it a job.
    worker = start("worker", [*WORKER, *(name for name in QUEUES if name != "maintenance")])
    scheduler = start("scheduler", SCHEDULER)
    wait_until(lambda: registered_worker_pids() == [worker.pid] and periodic_jobs_scheduled(),
               30, "the worker and the scheduler did not start")
    if busy:
        # It ends during the outage, so the worker has no Redis to report it to.
        job = Queue("media", connection=get_redis()).enqueue("time.sleep", 2, job_timeout=60)
        wait_until(lambda: job.get_status(refresh=True) == "started", 30, "the job did not start")

    own_redis.stop()
    wait_until(lambda: all("event=redis_unavailable" in p.log() or not p.running()
                           for p in (worker, scheduler)), 30,
               "the outage was not reported")

    assert worker.stop(10) == 0, worker.log()[-3000:]
    assert scheduler.stop(10) == 0, scheduler.log()[-3000:]
    assert rode_it_out(worker), worker.log()[-3000:]


def test_worker_started_while_redis_is_down_waits_for_it_then_works(app, client, auth, world,
                                                                    own_redis, start):
    own_redis.stop()
    worker = start("worker", WORKER)
    wait_until(lambda: "event=redis_unavailable" in worker.log() or not worker.running(), 30,
               "the worker did not report the outage")
    time.sleep(2)
    assert worker.running(), worker.log()[-3000:]

    own_redis.start()
    wait_until(lambda: registered_worker_pids() == [worker.pid] or not worker.running(), 30,
               lambda: f"the worker did not register once Redis was up:\n{worker.log()[-3000:]}")
    upload_completes(client, auth, world, worker)
    assert worker.stop(30) == 0, worker.log()[-3000:]


def test_sigterm_stops_a_worker_still_waiting_for_redis_to_start(app, own_redis, start):
    own_redis.stop()
    worker = start("worker", WORKER)
    wait_until(lambda: "event=redis_unavailable" in worker.log() or not worker.running(), 30,
               "the worker did not report the outage")
    assert worker.stop(5) == 0, worker.log()[-3000:]


def test_scheduler_started_while_redis_is_down_waits_then_schedules_its_jobs(app, own_redis,
                                                                             start):
    own_redis.stop()
    scheduler = start("scheduler", SCHEDULER)
    wait_until(lambda: "event=redis_unavailable" in scheduler.log() or not scheduler.running(),
               30, "the scheduler did not report the outage")
    time.sleep(2)
    assert scheduler.running(), scheduler.log()[-3000:]

    own_redis.start()
    wait_until(lambda: periodic_jobs_scheduled() or not scheduler.running(), 30,
               lambda: f"the periodic jobs were not scheduled:\n{scheduler.log()[-3000:]}")
    assert scheduler.stop(30) == 0, scheduler.log()[-3000:]


def test_sigterm_stops_a_scheduler_still_waiting_for_redis_to_start(app, own_redis, start):
    own_redis.stop()
    scheduler = start("scheduler", SCHEDULER)
    wait_until(lambda: "event=redis_unavailable" in scheduler.log() or not scheduler.running(),
               30, "the scheduler did not report the outage")
    assert scheduler.stop(5) == 0, scheduler.log()[-3000:]
