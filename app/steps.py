"""The steps a submission goes through, the queues that carry them, and the ways a step can
end other than in success. Plain data and exceptions: services and jobs use them without
loading the pipeline's database or Redis plumbing (app/pipeline.py).

scan -> store -> {plagiarism, admin_sync, email, thumbnail}
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    queue: str
    timeout: int  # seconds one attempt may run
    max_attempts: int
    backoff: float  # seconds before the first retry; doubles each time, with jitter
    depends_on: tuple[str, ...] = ()
    max_backoff: float = 600  # the longest wait between two attempts, before jitter
    # Runs straight on, in the job of the step that made it ready, when that job's worker
    # serves its queue: the submission's own work, not a wait on an outside system.
    inline: bool = False


# Every step that talks to a service keeps trying through an outage of several minutes
# (tests/test_retries.py holds the figures); the scan waits at most a minute between tries,
# so a deadline's uploads move on soon after the scanner is back.
STEPS = (
    Step("scan", "Virus scan", "scan", timeout=120, max_attempts=20, backoff=5, max_backoff=60),
    Step("store", "Safe storage", "store", timeout=120, max_attempts=6, backoff=5,
         depends_on=("scan",), inline=True),
    Step("plagiarism", "Similarity check", "external", timeout=900, max_attempts=8, backoff=30,
         depends_on=("store",)),
    Step("admin_sync", "Student records", "external", timeout=60, max_attempts=8, backoff=15,
         depends_on=("store",)),
    Step("email", "Receipt email", "email", timeout=60, max_attempts=8, backoff=15,
         depends_on=("store",), inline=True),
    Step("thumbnail", "Preview", "media", timeout=120, max_attempts=4, backoff=5,
         depends_on=("store",), inline=True),
)
STEP_BY_NAME = {step.name: step for step in STEPS}

# Queues in the order a worker that serves them all takes work from them. The reconciler
# comes first: behind a deadline backlog it would recover lost steps only once the backlog ends.
# Grade releases next: a few short jobs that students are waiting to see, whatever is queued.
PIPELINE_QUEUES = ("scan", "store", "email", "external", "media")
QUEUES = ("maintenance", "grades", *PIPELINE_QUEUES)
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
