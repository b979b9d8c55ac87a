"""Every job the workers run, as data: one table of each job's policy (the six steps of a
submission, the grade release, the grade email and the periodic upkeep), the step graph, the
queues that carry the jobs, and the ways a step can end other than in success. It imports
nothing from the app: services and jobs use it without loading the pipeline's database or Redis
plumbing (app/pipeline.py, which also turns a policy into RQ's options).

scan -> store -> {plagiarism, admin_sync, email, thumbnail}
"""

import random
from dataclasses import dataclass

HOUR = 3600
DAY = 24 * HOUR
MONTH = 30 * DAY


@dataclass(frozen=True)
class Backoff:
    """`attempts` in all; the first retry `first` seconds after the first attempt, each later
    one twice as long after the one before, at most `cap`; every wait jittered by up to half."""

    attempts: int
    first: float
    cap: float = 600

    def waits(self, scale):
        return [round(min(self.cap, self.first * 2**n) * scale * random.uniform(0.5, 1.5))
                for n in range(self.attempts - 1)]


@dataclass(frozen=True)
class Waits:
    """A retry after each of these waits, in seconds."""

    seconds: tuple[int, ...]

    @property
    def attempts(self):
        return len(self.seconds) + 1

    def waits(self, scale):
        return [round(wait * scale) for wait in self.seconds]


@dataclass(frozen=True)
class JobPolicy:
    func: str  # the function the job runs
    queue: str
    timeout: int | None = None  # seconds one attempt may run; None: RQ's default
    retry: Backoff | Waits | None = None
    # Seconds RQ keeps a finished job; None for a periodic job: three of its intervals.
    result_ttl: int | None = HOUR
    # Seconds RQ keeps a failed job, for staff to see and requeue; None: RQ's default.
    failure_ttl: int | None = MONTH
    every: str | None = None  # a periodic job: the setting that holds its interval in seconds

    @property
    def max_attempts(self):
        return self.retry.attempts if self.retry else 1


RUN_STEP = "jobs.runner.run_step"

JOBS = {
    # The six steps of a submission, each run by jobs/runner.py (the graph is STEPS below).
    # Every step that talks to a service keeps trying through an outage of several minutes
    # (tests/test_retries.py holds the figures); the scan waits at most a minute between tries,
    # so a deadline's uploads move on soon after the scanner is back.
    "scan": JobPolicy(RUN_STEP, "scan", timeout=120, retry=Backoff(20, first=5, cap=60)),
    "store": JobPolicy(RUN_STEP, "store", timeout=120, retry=Backoff(6, first=5)),
    "plagiarism": JobPolicy(RUN_STEP, "external", timeout=900, retry=Backoff(8, first=30)),
    "admin_sync": JobPolicy(RUN_STEP, "external", timeout=60, retry=Backoff(8, first=15)),
    "email": JobPolicy(RUN_STEP, "email", timeout=60, retry=Backoff(8, first=15)),
    "thumbnail": JobPolicy(RUN_STEP, "media", timeout=120, retry=Backoff(4, first=5)),
    # A grade release, queued at once or moved by rq-scheduler at its time, and each student's
    # grade email after it (jobs/grades.py).
    "release": JobPolicy("jobs.grades.release", "grades", timeout=600,
                         retry=Waits((5, 15, 60, 300)), result_ttl=DAY),
    "grade_email": JobPolicy("jobs.grades.send_grade_email", "email", timeout=60,
                             retry=Waits((15, 30, 60, 120, 300, 600, 600)), result_ttl=DAY),
    # A message from the student-records system, applied once recorded (app/inbound.py).
    "inbound": JobPolicy("jobs.inbound.apply", "records", timeout=60,
                         retry=Waits((5, 15, 60, 300)), result_ttl=DAY),
    # Periodic upkeep, kept in place by `flask run-scheduler` (jobs/maintenance.py) under
    # these job ids.
    "periodic-reconcile": JobPolicy("jobs.maintenance.reconcile", "maintenance",
                                    every="RECONCILE_EVERY_SECONDS", result_ttl=None,
                                    failure_ttl=None),
    "periodic-rollup": JobPolicy("jobs.rollup.roll_up", "maintenance",
                                 every="ROLLUP_EVERY_SECONDS", result_ttl=None,
                                 failure_ttl=None),
}
PERIODIC = {job_id: job for job_id, job in JOBS.items() if job.every}


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    depends_on: tuple[str, ...] = ()
    # Runs straight on, in the job of the step that made it ready, when that job's worker
    # serves its queue: the submission's own work, not a wait on an outside system.
    inline: bool = False

    @property
    def job(self):
        return JOBS[self.name]

    @property
    def queue(self):
        return self.job.queue

    @property
    def timeout(self):
        return self.job.timeout

    @property
    def retry(self):
        return self.job.retry

    @property
    def max_attempts(self):
        return self.job.max_attempts


STEPS = (
    Step("scan", "Virus scan"),
    Step("store", "Safe storage", depends_on=("scan",), inline=True),
    Step("plagiarism", "Similarity check", depends_on=("store",)),
    Step("admin_sync", "Student records", depends_on=("store",)),
    Step("email", "Receipt email", depends_on=("store",), inline=True),
    Step("thumbnail", "Preview", depends_on=("store",), inline=True),
)
STEP_BY_NAME = {step.name: step for step in STEPS}

# Queues in the order a worker that serves them all takes work from them. The reconciler
# comes first: behind a deadline backlog it would recover lost steps only once the backlog ends.
# Grade releases next: a few short jobs that students are waiting to see, whatever is queued.
# Then the student-records system's messages (app/inbound.py): enrolments and extensions.
PIPELINE_QUEUES = ("scan", "store", "email", "external", "media")
QUEUES = ("maintenance", "grades", "records", *PIPELINE_QUEUES)
# The queues a new submission goes through one after the other; intake's back pressure reads them.
INTAKE_QUEUES = ("scan", "store")


class StepSkipped(Exception):
    """The step has nothing to do for this submission; the message says why."""


class SubmissionRejected(Exception):
    """The file cannot be accepted (infected, unreadable); the message is shown to the student."""


class Refused(Exception):
    """An outside system refused the request for good (a 5xx SMTP reply, an HTTP 401): sending
    the same again cannot help. The step fails at once and waits for staff, who can requeue it
    once the cause is put right. `shown` is the reason everyone reads on the step; the message,
    with the system's own reply, is the step's error, which only staff see."""

    def __init__(self, message, shown):
        super().__init__(message)
        self.shown = shown


class RetryLater(Exception):
    """Try the step again, but not before `delay` seconds (the service asked us to wait)."""

    def __init__(self, message, delay):
        super().__init__(message)
        self.delay = delay
