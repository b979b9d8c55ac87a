"""An RQ worker inside the app context: `python worker.py [queue ...]` (default: every queue).

Jobs run in the worker's own process, one after the other, on the database connection and the
modules it keeps: no fork and no new connection per job. RQ's alarm stops a job at its
timeout; previews, whose C code (Pillow, pdfium) an alarm cannot interrupt, are drawn in a
child process the worker keeps and kills at the preview's timeout
(app/services/preview_process.py). After WORKER_JOBS_PER_PROCESS jobs the worker starts afresh
(the same process, re-executed), so whatever a job leaves behind cannot add up.

SIGTERM (Heroku's stop signal, sent to every process of the dyno) lets the current job finish,
then exits; a second one, a second or more later, stops at once and the reconciler re-queues
the interrupted step. A Redis outage (stopped, hung, restarted empty), even one under way as
the worker starts, makes it wait and then carry on, registered again, rather than exit."""

import importlib
import logging
import os
import signal
import sys
import threading
import time
from contextlib import suppress

from rq import Worker, worker_registration
from rq.exceptions import StopRequested
from rq.worker import WorkerStatus

from app import create_app
from app.extensions import db, get_redis
from app.steps import JOBS, PERIODIC, QUEUES, STEP_BY_NAME, STEPS
from jobs.cpu_priority import lower_cpu_priority
from jobs.redis_outage import MAX_DELAY, REDIS_DOWN, wait_for_redis
from jobs.runner import serving
from jobs.thumbnail import PREVIEWS

# Heartbeats this often, so the reconciler can tell a dead worker within a minute.
WORKER_TTL = 30
JOB_MONITORING_INTERVAL = 10

log = logging.getLogger("worker")


class PeriodicJobsQuiet(logging.Filter):
    """RQ's lines for each periodic upkeep job (every few seconds, on the maintenance queue)
    would bury everything else a worker says, `make run`'s account table included; their own
    summaries speak when something happened."""

    queues = {job.queue for job in PERIODIC.values()}

    def filter(self, record):
        return not (record.levelno <= logging.INFO
                    and any(name in str(arg) for arg in record.args or () for name in self.queues))


class OutageTolerantWorker(Worker):
    """A worker that waits out a Redis outage instead of exiting. RQ's loop heartbeats before
    each wait for a job and after each job: there it waits for Redis, registers itself again
    if Redis lost its registration, and restarts its scheduler process, which a Redis error
    ends."""

    # RQ's own retry when dequeueing fails, capped like ours.
    max_connection_wait_time = MAX_DELAY
    # "Result is kept for 3600 seconds" after every job says nothing a reader needs.
    log_result_lifespan = False

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:
            # Part of the job monitor's pipeline: no place to wait.
            return super().heartbeat(timeout, pipeline)
        try:
            with self.connection.pipeline() as beat:
                super().heartbeat(timeout, pipeline=beat)
                beat.sismember(self.redis_workers_keys, self.key)
                registered = beat.execute()[-1]
        except REDIS_DOWN as error:
            self.wait_out_outage(error)
            return self.heartbeat(timeout)
        if not registered:
            self.register_again()
        self.restart_dead_scheduler()

    def wait_out_outage(self, error):
        if not wait_for_redis(self.connection, f"process=worker worker={self.name}", error,
                              stopping=lambda: self.stopping):
            raise StopRequested from error

    # RQ retries a refused connection while it dequeues, but a Redis that hangs (a timeout)
    # in these steps of its loop ends the loop, and with it the worker: wait, then go on.
    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        return self._through_outage(super().dequeue_job_and_maintain_ttl, timeout, max_idle_time)

    def check_for_suspension(self, burst):
        return self._through_outage(super().check_for_suspension, burst)

    def run_maintenance_tasks(self):
        return self._through_outage(super().run_maintenance_tasks)

    def set_state(self, state, pipeline=None):
        # Also as a job ends, after its outcome is reported.
        if pipeline is not None:
            return super().set_state(state, pipeline)
        return self._through_outage(super().set_state, state)

    def _through_outage(self, step, *args):
        while True:
            try:
                return step(*args)
            except REDIS_DOWN as error:
                self.wait_out_outage(error)

    def register_again(self):
        log.warning("event=worker_registered_again worker=%s", self.name)
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping={**self.serialize(), "state": self.get_state()})
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def restart_dead_scheduler(self):
        # RQ itself would retry only at its next maintenance, ten minutes on.
        process = self.scheduler and self.scheduler._process
        unstarted = self._scheduler_unstarted
        if (unstarted or (process and not process.is_alive())) and not self.stopping:
            log.warning("event=scheduler_restarted worker=%s", self.name)
            self.scheduler.acquire_locks(auto_start=True)
            self._scheduler_unstarted = False

    _scheduler_unstarted = False

    def _start_scheduler(self, *args, **kwargs):
        # Redis gone in the moment between registering and starting the scheduler: start it
        # at the first heartbeat after Redis is back, instead of exiting.
        try:
            super()._start_scheduler(*args, **kwargs)
        except REDIS_DOWN as error:
            log.warning("event=scheduler_not_started worker=%s error=%r", self.name, str(error))
            self._scheduler_unstarted = True

    def execute_job(self, job, queue):
        self.execute_in_process(job, queue)

    def execute_in_process(self, job, queue):
        """RQ's SimpleWorker way, with the heartbeats a forking worker sends while its horse
        works (the reconciler takes a job without them for lost). RQ's alarm still stops the
        job at its timeout."""
        beats = JobHeartbeats(self, job)
        try:
            self.prepare_execution(job)
            beats.start()
            with serving(self.queue_names(), stopping=lambda: self.stopping):
                self.perform_job(job, queue)
        except REDIS_DOWN as error:
            # The step's own outcome is in the database; the reconciler re-queues a step whose
            # job Redis lost, and a step already done is not run again.
            log.warning("event=redis_lost_during_job worker=%s job_id=%s error=%r",
                        self.name, job.id, str(error))
            self.heartbeat()
        finally:
            beats.stop()
            db.session.remove()
        self.set_state(WorkerStatus.IDLE)

    # Set by the first stop signal. RQ's own flag is set only when the signal finds a job
    # running; otherwise RQ raises StopRequested from the handler, wherever the worker waits.
    stopping = False

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)

    def set_shutdown_requested_date(self):
        # Called by the SIGTERM handler, which must stop a busy worker during an outage too.
        with suppress(*REDIS_DOWN):
            super().set_shutdown_requested_date()

    def teardown(self):
        # SIGTERM to an idle worker raises StopRequested wherever the loop is, perhaps between
        # a Redis command and its reply; redis-py then puts that connection back with the
        # reply unread, and the next command on it (the worker's last writes) would read it.
        self.connection.connection_pool.disconnect(inuse_connections=False)
        try:
            super().teardown()
        except REDIS_DOWN:
            log.warning("event=stopped_unregistered worker=%s reason=redis_unavailable", self.name)

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread):
        if not isinstance(exc, REDIS_DOWN):
            return super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        # The main loop reports the outage; redis-py resubscribes when Redis is back.
        time.sleep(2)


class JobHeartbeats:
    """Heartbeats for a job running in the worker's own process, from a thread, every
    job_monitoring_interval seconds until it ends."""

    def __init__(self, worker, job):
        self.worker = worker
        self.job = job
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True,
                                       name=f"heartbeats-{job.id}")

    def start(self):
        self.thread.start()

    def stop(self):
        self.ended.set()
        if self.thread.is_alive():
            self.thread.join()

    def _beat(self):
        while not self.ended.wait(self.worker.job_monitoring_interval):
            try:
                self.worker.maintain_heartbeats(self.job)
            except Exception as error:  # Redis away: the next beat tries again
                log.warning("event=heartbeat_failed worker=%s job_id=%s error=%r",
                            self.worker.name, self.job.id, str(error))


# Every module an RQ job of ours names or runs, imported once as the worker starts (Pillow,
# pdfium, requests...), never per job or per fresh start.
JOB_MODULES = (*dict.fromkeys(job.func.rpartition(".")[0] for job in JOBS.values()),
               *(f"jobs.{step.name}" for step in STEPS))


def preload_job_modules():
    for name in JOB_MODULES:
        importlib.import_module(name)


def build_worker(queue_names, preload=True):
    """The worker of `python worker.py`, inside the current app context."""
    queue_names = queue_names or QUEUES
    if preload:
        preload_job_modules()
        if STEP_BY_NAME["thumbnail"].queue in queue_names:
            # Ready before the first preview instead of starting as it waits.
            PREVIEWS.start()
    # A forked child (RQ's scheduler) must not share the worker's database connections.
    os.register_at_fork(after_in_child=lambda: db.engine.dispose(close=False))
    return OutageTolerantWorker(
        queue_names,
        connection=get_redis(),
        worker_ttl=WORKER_TTL,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )


def redis_answers_at_start():
    """Wait for a Redis that is down as the worker starts (a dyno up before its Redis, a Redis
    restarting); False if SIGTERM or SIGINT came first."""
    connection = get_redis()
    try:
        connection.ping()
        return True
    except REDIS_DOWN as error:
        stop = []
        handlers = {signum: signal.signal(signum, lambda *_: stop.append(True))
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            return wait_for_redis(connection, f"process=worker pid={os.getpid()}", error,
                                  stopping=lambda: bool(stop))
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


def main(queue_names):
    app = create_app()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    logging.getLogger("rq.worker").addFilter(PeriodicJobsQuiet())
    lower_cpu_priority(app.config["WORKER_NICENESS"])
    with app.app_context():
        if not redis_answers_at_start():
            log.info("event=worker_stopped_before_start reason=signal")
            return
        worker = build_worker(queue_names)
        started = time.monotonic()
        worker.work(with_scheduler=True, logging_level="INFO",
                    max_jobs=app.config["WORKER_JOBS_PER_PROCESS"])
        if worker.stopping:
            return
        # Done its share of jobs, or RQ's loop gave up (a Redis that hung past the socket
        # timeout): start afresh rather than exit, which would leave the queues unserved.
        ran_for = time.monotonic() - started
    start_afresh(worker.name, ran_for)


def start_afresh(name, ran_for):
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    if ran_for < 5:
        time.sleep(5 - ran_for)  # a worker that cannot get going must not spin
    log.info("event=worker_restarted worker=%s ran_for=%ds", name, ran_for)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
