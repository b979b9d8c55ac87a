"""The one RQ entry point for pipeline steps: it loads the submission, records the step's
progress, runs the step's own module and decides what comes next. Steps the finished one made
ready run on in the same job when they are inline steps on a queue this worker serves
(Step.inline in app/steps.py): each with its own attempt, time limit and retries."""

import importlib
import logging
import math
import signal
import threading
from contextlib import contextmanager
from contextvars import ContextVar

from rq import get_current_job
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from sqlalchemy.orm import joinedload

from app import pipeline
from app.extensions import db
from app.models import Assignment, StepRun, Submission
from app.ops import metrics
from app.steps import STEP_BY_NAME, Refused, RetryLater, StepSkipped, SubmissionRejected

log = logging.getLogger(__name__)

# The queues of the worker running the current job (worker.py sets them): a step runs on in
# the job only where this worker would have run its own job, and not once it is stopping.
_serving = ContextVar("serving", default=(frozenset(), lambda: False))


@contextmanager
def serving(queue_names, stopping=lambda: False):
    token = _serving.set((frozenset(queue_names), stopping))
    try:
        yield
    finally:
        _serving.reset(token)


def _run_on_queues():
    queue_names, stopping = _serving.get()
    # A worker told to stop finishes the step under way; the steps it makes ready wait in
    # their queues for another worker.
    return frozenset() if stopping() else queue_names


def _perform(step_name):
    return importlib.import_module(f"jobs.{step_name}").perform


def run_step(submission_id, step_name):
    with rows_kept_across_commits():
        job = get_current_job()
        status, run_on = _run_step(submission_id, step_name, job)
        while run_on:
            step_run = run_on.pop(0)
            with own_time_limit(STEP_BY_NAME[step_run.name].timeout):
                run_on += _attempt(step_run, job, inline=True)[1]
        return status


@contextmanager
def rows_kept_across_commits():
    """The job's own rows stay loaded across its commits instead of being read again after
    each one. The rows other processes change (the other steps) are read afresh where it
    matters, in pipeline.finish."""
    session = db.session()
    kept = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = kept


@contextmanager
def own_time_limit(seconds):
    """A step run on in a job gets its own time, as the job's first step has the job's: RQ's
    alarm stops it at its timeout, and the job's own clock waits meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield  # no alarms off the main thread; RQ's own are none there either
        return
    handler = signal.getsignal(signal.SIGALRM)
    left = signal.alarm(0)
    try:
        with UnixSignalDeathPenalty(seconds, JobTimeoutException):
            yield
    finally:
        signal.signal(signal.SIGALRM, handler)
        signal.alarm(left)


def _run_step(submission_id, step_name, job):
    job_id = job.id if job else None
    # With what the steps read of it (the receipt, the record, the similarity check), in one
    # query rather than one each.
    submission_of = joinedload(StepRun.submission)
    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name=step_name)
        .options(submission_of.joinedload(Submission.assignment).joinedload(Assignment.course),
                 submission_of.joinedload(Submission.student))
    ).scalar_one_or_none()
    if step_run is None:
        log.warning("event=step_missing submission_id=%s step=%s job_id=%s",
                    submission_id, step_name, job_id)
        return "missing", []
    submission = step_run.submission
    if step_run.done:
        return "already done", []
    if job_id and step_run.job_id and job_id != step_run.job_id:
        # The reconciler handed this step to a newer job; the database decides which one runs.
        log.info("event=stale_job submission_id=%s step=%s job_id=%s current_job_id=%s",
                 submission_id, step_name, job_id, step_run.job_id)
        return "superseded", []
    if submission.status == "rejected":
        # The step that rejected the file keeps its failure; any other is skipped.
        if step_run.status != "failed":
            pipeline.record_step(step_run, "skipped", "Not run: the file was not accepted")
            db.session.commit()
        return "skipped", []

    pipeline.start_processing(submission)
    pipeline.start_step(step_run, job_id)
    db.session.commit()
    return _attempt(step_run, job, inline=False)


def _attempt(step_run, job, inline):
    """Run a started step's module and record how it ended; returns its status and the steps
    to run on. A step of the job's own fails the job, for RQ to retry; one run on schedules
    its own retry instead, and the job goes on."""
    submission = step_run.submission
    try:
        detail = _perform(step_run.name)(submission, step_run)
    except StepSkipped as skipped:
        db.session.rollback()
        pipeline.record_step(step_run, "skipped", str(skipped))
    except SubmissionRejected as rejected:
        db.session.rollback()
        pipeline.record_step(step_run, "failed", str(rejected), error=str(rejected))
        pipeline.skip_remaining(submission, "Not run: the file was not accepted")
        pipeline.record_submission(submission, "rejected", str(rejected))
        db.session.commit()
        metrics.count_step(step_run, outcome="rejected")
        return "rejected", []
    except Exception as exc:
        db.session.rollback()
        _record_failure(step_run, job, exc, inline)
        if not inline:
            raise
        return step_run.status, []
    else:
        pipeline.record_step(step_run, "succeeded", detail or "Done")
    status = step_run.status
    run_on = pipeline.finish(step_run, job.id if job else None, _run_on_queues())
    metrics.count_step(step_run)
    return status, run_on


def _record_failure(step_run, job, exc, inline):
    """A step of the job's own is retried by RQ, as the job's retry policy says; the next
    attempt of one run on in another step's job is scheduled here, as its own job."""
    error = f"{type(exc).__name__}: {exc}"
    step = STEP_BY_NAME[step_run.name]
    refused = isinstance(exc, Refused)
    wait = None
    if inline:
        retries_left = 0 if refused else step.max_attempts - step_run.attempts
        # This retry's wait, then the later ones' (of the step's own job).
        delays = pipeline.retry_delays(step)[-retries_left:] if retries_left else []
        wait = delays[0] if delays else None
    else:
        if refused and job is not None:
            pipeline.retry_no_more(job)
        retries_left = job.retries_left if job is not None and job.retries_left else 0
    if retries_left and isinstance(exc, RetryLater):
        if inline:
            wait = max(wait, math.ceil(exc.delay) + 1)
            delay = wait
        else:
            delay = pipeline.retry_not_before(job, exc.delay)
        pipeline.record_step(
            step_run, "retrying",
            f"{exc}; trying again in {delay} s "
            f"(attempt {step_run.attempts} of {step.max_attempts})",
            error=error,
        )
    elif retries_left:
        pipeline.record_step(
            step_run, "retrying",
            f"Attempt {step_run.attempts} of {step.max_attempts} did not finish; trying again",
            error=error,
        )
    else:
        reason = exc.shown if refused else f"Gave up after {step_run.attempts} attempts"
        pipeline.record_step(step_run, "failed", f"{reason}; staff have been alerted",
                             error=error)
        submission = step_run.submission
        if submission.status not in ("rejected", "needs_attention"):
            pipeline.record_submission(
                submission, "needs_attention",
                f"{step.title} could not finish; your submission is safely received",
            )
    if wait is not None:
        step_run.job_id = pipeline.new_job_id()
    db.session.commit()
    if wait is not None:
        pipeline.enqueue_retry(step_run, wait, delays[1:])
    metrics.count_step(step_run)
    log.warning("event=step_error submission_id=%s step=%s job_id=%s error=%r",
                step_run.submission_id, step_run.name, step_run.job_id, error)

