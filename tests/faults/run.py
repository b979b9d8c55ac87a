"""One fault run: the whole system on private services, a few hundred uploads through the real
intake, then waiting (bounded) for every submission to finish, with what is needed to explain
a run that does not."""

import time
from collections import Counter

from rq import Worker
from rq.job import Job
from sqlalchemy.exc import OperationalError

from app.extensions import db, get_redis
from app.models import StepRun, Submission
from app.steps import STEPS
from tests.faults.checks import Expected
from tests.helpers import upload_api

FINISHED = ("completed", "rejected")
DONE = ("succeeded", "skipped", "failed")


class RunFailed(AssertionError):
    pass


def read(statement):
    """Rows of one query in a transaction of its own, so no connection is held across a
    database restart."""
    try:
        return db.session.execute(statement).all()
    finally:
        db.session.remove()


class FaultRun:
    def __init__(self, app, client, fleet, assignment_id, headers, stack, smtp, turnitin,
                 records):
        self.app = app
        self.client = client
        self.fleet = fleet
        self.assignment_id = assignment_id
        self.headers = headers
        self.stack = stack
        self.smtp = smtp
        self.turnitin = turnitin
        self.records = records
        self.expected = {}  # submission id -> Expected
        self.notes = []  # what the run did, in order, for the timing line and failures
        self.started = time.monotonic()

    def note(self, text):
        self.notes.append(f"{time.monotonic() - self.started:6.1f}s {text}")

    def submit(self, files):
        """Hand in every file through the API, each student with their own token, retrying
        politely when intake asks us to wait."""
        for number, upload in enumerate(files):
            self.submit_one(number, upload)
        self.note(f"{len(files)} uploads accepted")

    def submit_one(self, number, upload):
        """Hand in upload `number` (its key); returns the longest one answer took."""
        headers = self.headers[number % len(self.headers)]
        deadline = time.monotonic() + 60
        slowest = 0.0
        while True:
            asked = time.monotonic()
            response = upload_api(self.client, headers, self.assignment_id, upload.content,
                                  upload.filename, key=f"fault-upload-{number}")
            slowest = max(slowest, time.monotonic() - asked)
            if response.status_code == 202:
                break
            if response.status_code not in (429, 503) or time.monotonic() > deadline:
                raise RunFailed(f"upload {upload.filename} answered {response.status_code}: "
                                f"{response.get_data(as_text=True)}")
            time.sleep(float(response.headers.get("Retry-After", "1")))
        body = response.get_json()
        self.expected[body["id"]] = Expected(upload, body["student_id"])
        db.session.remove()
        return slowest

    def start(self, files):
        """Hand everything in, then start the workers: the fault lands on a full pipeline."""
        self.submit(files)
        self.fleet.start()
        self.note(f"{self.fleet.size} workers and the scheduler started")

    def statuses(self):
        return Counter(dict(read(
            db.select(Submission.status, db.func.count())
            .where(Submission.id.in_(self.expected)).group_by(Submission.status))))

    def steps(self, statuses, step=None):
        query = db.select(db.func.count()).select_from(StepRun).where(
            StepRun.submission_id.in_(self.expected), StepRun.status.in_(statuses))
        if step is not None:
            query = query.where(StepRun.name == step)
        return read(query)[0][0]

    def wait_until(self, predicate, seconds, what, poll=0.2):
        """Poll `predicate` (a database it reads may be down for a moment) until it holds,
        restarting any process that exited meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.fleet.keep_running()
            try:
                if predicate():
                    return
            except OperationalError:
                pass
            if time.monotonic() > deadline:
                raise RunFailed(f"gave up after {seconds} s waiting until {what}\n"
                                + self.diagnosis())
            time.sleep(poll)

    def wait_mid_run(self, fraction, step=None, seconds=150):
        """Wait until `fraction` of the step runs (of one step, or all) are done: the fault
        then lands on work in flight."""
        total = len(self.expected) * (1 if step else len(STEPS))
        target = max(1, int(total * fraction))
        self.wait_until(lambda: self.steps(DONE, step) >= target, seconds,
                        f"{target} {step or 'pipeline'} steps were done")
        self.note(f"mid-run: {self.steps(DONE, step)} of {total} {step or 'all'} steps done")

    def wait_all_finished(self, seconds):
        def settled():
            statuses = self.statuses()
            if statuses["needs_attention"]:
                raise RunFailed("a step gave up: some submissions need attention\n"
                                + self.diagnosis())
            return sum(statuses[s] for s in FINISHED) == len(self.expected)

        self.wait_until(settled, seconds, "every submission finished", poll=0.5)
        self.note("every submission finished")
        if self.fleet.exits:
            self.note(f"{len(self.fleet.exits)} processes exited and were restarted: "
                      + ", ".join(f"{name} {pid} ({code})" for name, pid, code in
                                  self.fleet.exits))

    def worker_running(self, steps):
        """(pid, step) of a worker whose job has recorded one of `steps` as running (the kill
        then lands mid-step), or None."""
        running = read(db.select(StepRun.name, StepRun.job_id)
                       .where(StepRun.name.in_(steps), StepRun.status == "running"))
        redis = get_redis()
        jobs = Job.fetch_many([job_id for _, job_id in running], connection=redis)
        for (step, _), job in zip(running, jobs, strict=True):
            if job is None or not job.worker_name:
                continue
            worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name,
                                        connection=redis)
            if worker is not None and worker.get_current_job_id() == job.id:
                return worker.pid, step
        return None

    def diagnosis(self):
        steps = [row[0] for row in read(
            db.select(StepRun).where(StepRun.submission_id.in_(self.expected),
                                     StepRun.status.notin_(("succeeded", "skipped")))
            .order_by(StepRun.id))]
        shown = steps[:15]
        jobs = Job.fetch_many([s.job_id or "-" for s in shown], connection=get_redis())
        stuck = [f"  submission {s.submission_id} {s.name} {s.status} attempts={s.attempts} "
                 f"job={s.job_id} redis={job.get_status() if job else 'missing'} "
                 f"error={s.last_error!r}" for s, job in zip(shown, jobs, strict=True)]
        return "\n".join([
            f"statuses: {dict(self.statuses())}",
            f"unfinished steps: {dict(Counter(s.status for s in steps))}",
            *stuck,
            f"process exits: {self.fleet.exits}",
            "run: " + " | ".join(self.notes),
            *self.fleet.log_lines("Traceback", "level=ERROR", "quitting")[-25:],
        ])
