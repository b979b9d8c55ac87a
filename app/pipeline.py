"""The moves of a submission and its steps through the pipeline (the step graph is in
app/steps.py): claiming, recording and announcing each move, and handing steps to RQ."""

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from sqlalchemy import and_, exists, update
from sqlalchemy.orm.attributes import set_committed_value

from app.events.publisher import emit
from app.events.topics import submission_topics
from app.extensions import db, get_redis
from app.models import DONE_STATUSES, StepRun, Submission, utcnow
from app.steps import INTAKE_QUEUES, STEP_BY_NAME, STEPS

log = logging.getLogger(__name__)


def retry_delays(job):
    """The waits before each retry of a job of app/steps.py's table (a JobPolicy or a Step)."""
    return job.retry.waits(current_app.config["RETRY_BACKOFF_SCALE"])


def retry_policy(job, delays=None):
    """RQ's retry policy for a job of the table: its own retries, or retries after `delays`
    (the ones a retry left to carry on); None for no retry."""
    delays = retry_delays(job) if delays is None and job.retry else delays
    return Retry(max=len(delays), interval=delays) if delays else None


# RQ 2.12 steers a job's retries by the policy it was enqueued with, or by a Retry the job
# returns, which RQ counts apart from that policy; the policy alone also covers a job that timed
# out or whose worker died. So a failure that must not be retried, or not before a service's
# time, edits the failing job's own policy, here and nowhere else.
def retry_no_more(job):
    """RQ files the failing job as failed instead of retrying it."""
    job.retries_left = 0


def retry_not_before(job, delay):
    """Make RQ's coming retry of the failing job wait at least `delay` seconds; the wait."""
    intervals = list(job.retry_intervals or [0])
    # The same slot RQ's Job.get_retry_interval reads when it schedules the retry.
    slot = max(len(intervals) - job.retries_left, 0)
    # RQ rounds scheduled times down to the second; the extra second keeps the retry from
    # running early.
    intervals[slot] = max(intervals[slot], math.ceil(delay) + 1)
    job.retry_intervals = intervals
    return intervals[slot]


def carry_policy(job, policy):
    """Give a job made elsewhere (rq-scheduler's, which takes no retry policy) the retries and
    failure TTL of a job of the table, as if enqueued here."""
    retry = retry_policy(policy)
    job.retries_left = retry.max
    job.retry_intervals = retry.intervals
    job.failure_ttl = policy.failure_ttl
    job.save()


def queue(name):
    return Queue(name, connection=get_redis())


def enqueue(job, *args, wait=None, delays=None, pipe=None, **options):
    """Queue a job of the table with its policy (time limit, retries, how long RQ keeps it),
    now or `wait` seconds from now; `delays` as for retry_policy."""
    rq_queue = queue(job.queue)
    options.update(job_timeout=job.timeout, retry=retry_policy(job, delays),
                   result_ttl=job.result_ttl, failure_ttl=job.failure_ttl, pipeline=pipe)
    if wait:
        return rq_queue.enqueue_in(timedelta(seconds=wait), job.func, *args, **options)
    return rq_queue.enqueue(job.func, *args, **options)


LIVE_JOB_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                     JobStatus.STARTED}


def enqueue_once(job, job_id, *args, **options):
    """enqueue under `job_id`, unless a job of that id is already waiting or running; True if
    this call queued it."""
    try:
        if Job.fetch(job_id, connection=get_redis()).get_status(refresh=False) \
                in LIVE_JOB_STATUSES:
            return False
    except NoSuchJobError:
        pass
    enqueue(job, *args, job_id=job_id, **options)
    return True


def backlog():
    """Submissions waiting to be scanned and stored, or None when Redis cannot say.

    Each submission waits in at most one of these queues, so this counts work, not jobs. The
    later queues are left out: a slow plagiarism service must not close intake, and after a
    spike they hold four jobs per submission for a while longer."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name in INTAKE_QUEUES:
            pipe.llen(queue(name).key)
        return sum(pipe.execute())
    except Exception as exc:
        log.warning("event=backlog_unknown error=%r", exc)
        return None


def create_steps(submission, queue_first=False):
    """The submission's step rows, pending. With `queue_first`, the steps with nothing to wait
    for are created queued instead, each for a job of its own: returned, to be announced
    (`announce`) once the rows have ids and handed to Redis (`enqueue_claimed`) once
    committed."""
    submission.steps = [
        StepRun(name=step.name, position=index, status="pending")
        for index, step in enumerate(STEPS)
    ]
    if not queue_first:
        return []
    first = set(ready_steps({step.name: "pending" for step in STEPS}))
    queued = [step_run for step_run in submission.steps if step_run.name in first]
    for step_run in queued:
        _set(step_run, _queued(new_job_id()))
    return queued


def announce(step_runs):
    for step_run in step_runs:
        _announce(step_run)


def step_payload(step_run):
    return {
        "submission_id": step_run.submission_id,
        "step": step_run.name,
        "title": STEP_BY_NAME[step_run.name].title,
        "status": step_run.status,
        "attempts": step_run.attempts,
        "detail": step_run.detail,
        "error": step_run.last_error,
    }


def submission_payload(submission):
    return {
        "submission_id": submission.id,
        "status": submission.status,
        "detail": submission.status_detail,
    }


def record_step(step_run, status, detail, error=None):
    _set(step_run, step_values(status, detail, error))
    _announce(step_run)


def _set(step_run, values):
    for name, value in values.items():
        setattr(step_run, name, value)


def step_values(status, detail, error=None):
    """The columns a step's move to `status` writes."""
    values = {"status": status, "detail": detail}
    if error is not None:
        values["last_error"] = error
    now = utcnow()
    if status == "running":
        values.update(started_at=now, finished_at=None)
    elif status in ("succeeded", "failed", "skipped"):
        values["finished_at"] = now
    elif status == "queued":
        values["queued_at"] = now
    return values


def _announce(step_run):
    """The step as it now stands, as an event on its submission's topics and a log line."""
    submission = step_run.submission
    emit("step", step_payload(step_run), submission_topics(submission), submission.id)
    log.info(
        "event=step submission_id=%s step=%s status=%s attempts=%s job_id=%s",
        submission.id, step_run.name, step_run.status, step_run.attempts, step_run.job_id,
    )


def record_submission(submission, status, detail=""):
    submission.status = status
    submission.status_detail = detail
    emit("submission", submission_payload(submission), submission_topics(submission),
         submission.id)
    log.info("event=submission submission_id=%s status=%s", submission.id, status)


def _queued(job_id):
    return {"job_id": job_id, **step_values("queued", "Waiting for a worker")}


def claim_for_queue(step_run, from_statuses=("pending",)):
    """Atomically move a step to queued, for a new job; None when another process got there
    first, else the job's id."""
    job_id = new_job_id()
    if not _claim(step_run, from_statuses, _queued(job_id)):
        return None
    _announce(step_run)
    return job_id


def claim_to_run(step_run, job_id):
    """Atomically move a pending step to running in the job `job_id` (queued and started in
    one write, each announced); False when another process got there first."""
    queued = _queued(job_id)
    attempts = step_run.attempts + 1
    running = {"attempts": attempts,
               **step_values("running", f"Running (attempt {attempts})")}
    if not _claim(step_run, ("pending",), {**queued, **running}):
        return False
    _written(step_run, **queued, attempts=attempts - 1)
    _announce(step_run)
    _written(step_run, **running)
    _announce(step_run)
    return True


def _claim(step_run, from_statuses, values):
    claimed = db.session.execute(
        update(StepRun)
        .where(StepRun.id == step_run.id, StepRun.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed:
        # The row now holds what the UPDATE wrote: no need to read it back.
        _written(step_run, **values)
    return bool(claimed)


def new_job_id():
    return uuid.uuid4().hex


def start_step(step_run, job_id):
    """The step's attempt begins, in `job_id` (recorded, not committed)."""
    step_run.attempts += 1
    step_run.job_id = job_id or step_run.job_id
    record_step(step_run, "running", f"Running (attempt {step_run.attempts})")


def ready_steps(statuses):
    """The pending steps whose dependencies are all done, from {step name: status}."""
    done = {name for name, status in statuses.items() if status in DONE_STATUSES}
    return [step.name for step in STEPS
            if statuses.get(step.name) == "pending" and set(step.depends_on) <= done]


def enqueue_step(step_run, pipe=None):
    _enqueue(step_run, pipe=pipe)


def enqueue_retry(step_run, wait, delays):
    """Schedule the next attempt of a step that failed where no job of its own carried it
    (run on in another step's job): a job `wait` seconds from now, retried after `delays`.
    Redis away: the reconciler queues the step once it is back."""
    try:
        _enqueue(step_run, delays, wait=wait)
    except Exception as exc:
        log.warning("event=enqueue_failed submission_id=%s steps=%s error=%r",
                    step_run.submission_id, step_run.name, exc)


def _enqueue(step_run, delays=None, pipe=None, wait=None):
    step = STEP_BY_NAME[step_run.name]
    enqueue(step.job, step_run.submission_id, step.name, wait=wait, delays=delays, pipe=pipe,
            job_id=step_run.job_id,
            description=f"{step.name} submission {step_run.submission_id}",
            meta={"submission_id": step_run.submission_id, "step": step.name})


def enqueue_claimed(submission_id, claimed):
    """Hand steps claimed (and committed) as queued to Redis, in one round trip. Redis away:
    the reconciler queues them once it is back."""
    if not claimed:
        return
    try:
        with get_redis().pipeline() as pipe:
            for step_run in claimed:
                enqueue_step(step_run, pipe)
            pipe.execute()
    except Exception as exc:
        log.warning("event=enqueue_failed submission_id=%s steps=%s error=%r",
                    submission_id, ",".join(s.name for s in claimed), exc)


def enqueue_ready(submission):
    """Queue every pending step whose dependencies are done. Commits."""
    ready = ready_steps({s.name: s.status for s in submission.steps})
    claimed = [s for s in submission.steps if s.name in ready and claim_for_queue(s)]
    db.session.commit()
    enqueue_claimed(submission.id, claimed)
    return claimed


@dataclass(frozen=True)
class RequeueOutcome:
    requeued: bool  # the failed step is queued again, in the database
    # Redis took its job; if not, the reconciler hands the step to Redis once it is back.
    enqueued: bool = False


NOT_REQUEUED = RequeueOutcome(requeued=False)


def requeue_step(step_run, spent_job_id=None):
    """Put a failed step back in its queue (staff action). Commits. Its spent failed job, and
    `spent_job_id` (another failed job of the step, the one an operator picked), leave RQ's
    failed-job registry as the new job enters its queue, so no failure that is over stays on
    the queues page or in the failed-jobs metric. Redis is asked at best: the step is requeued
    in the database all the same. Never for a file that was not accepted: its scan's failure is
    the rejection, and every other step was skipped."""
    submission = step_run.submission
    if submission.status == "rejected" or step_run.status != "failed":
        return NOT_REQUEUED
    try:
        spent = _failed_jobs_of(step_run, spent_job_id)
    except RedisError as exc:
        log.warning("event=requeue_unqueued submission_id=%s step=%s error=%r",
                    step_run.submission_id, step_run.name, exc)
        spent = None
    # Redis away: the step keeps its failed job's id, by which the reconciler, once Redis is
    # back, knows that job for spent and drops it as it hands the step to a new one.
    job_id = step_run.job_id if spent is None else new_job_id()
    if not _claim(step_run, ("failed",), {**_queued(job_id), "attempts": 0}):
        return NOT_REQUEUED
    _announce(step_run)
    # With another step still failed the submission keeps needing attention: nothing would
    # otherwise bring it back from processing once this step is done.
    still_failed = any(other.status == "failed" for other in submission.steps
                       if other.id != step_run.id)
    if submission.status == "needs_attention" and not still_failed:
        record_submission(submission, "processing", "A step was requeued")
    db.session.commit()
    if spent is None:
        return RequeueOutcome(requeued=True)
    try:
        with get_redis().pipeline() as pipe:
            enqueue_step(step_run, pipe)  # first: RQ opens the pipeline's MULTI itself
            for job in spent:
                drop_failed_job(job, pipe)
            pipe.execute()
    except RedisError as exc:
        log.warning("event=enqueue_failed submission_id=%s steps=%s error=%r",
                    step_run.submission_id, step_run.name, exc)
        return RequeueOutcome(requeued=True)
    return RequeueOutcome(requeued=True, enqueued=True)


def _failed_jobs_of(step_run, spent_job_id=None):
    """The step's failed RQ jobs among its last job and `spent_job_id`. A step that failed run
    on in another step's job has that job's id, which is not its own to drop."""
    job_ids = [job_id for job_id in dict.fromkeys((step_run.job_id, spent_job_id)) if job_id]
    jobs = Job.fetch_many(job_ids, connection=get_redis()) if job_ids else []
    return [job for job in jobs
            if job is not None and job.get_status(refresh=False) == JobStatus.FAILED
            and job.meta.get("submission_id") == step_run.submission_id
            and job.meta.get("step") == step_run.name]


def drop_failed_job(job, pipe=None):
    """A failed job is spent: out of RQ's failed-job registry, and deleted."""
    FailedJobRegistry(job.origin, connection=job.connection).remove(job, pipeline=pipe)
    job.delete(pipeline=pipe)


def skip_remaining(submission, reason):
    for step_run in submission.steps:
        if step_run.status in ("pending", "queued", "retrying"):
            record_step(step_run, "skipped", reason)


def complete_if_done(submission_id):
    """Mark the submission completed once every step is done; exactly one caller wins.
    Commits."""
    won = _complete(submission_id)
    db.session.commit()
    return won


def _complete(submission_id, submission=None):
    unfinished = exists().where(
        and_(StepRun.submission_id == submission_id,
             StepRun.status.notin_(DONE_STATUSES))
    )
    won = db.session.execute(
        update(Submission)
        .where(Submission.id == submission_id,
               Submission.status.in_(("received", "processing")), ~unfinished)
        .values(status="completed", status_detail="All checks finished")
        .execution_options(synchronize_session=False)
    ).rowcount
    if won:
        submission = submission or db.session.get(Submission, submission_id)
        _written(submission, status="completed", status_detail="All checks finished")
        record_submission(submission, "completed", "All checks finished")
    return bool(won)


def finish(step_run, job_id=None, serving=()):
    """After a step ended in success or skip (recorded, not committed): claim the steps it made
    ready and complete the submission once every step is done, in the same transaction, then
    queue what was claimed. Commits. Returns the steps claimed to run on in job `job_id`,
    already started: the inline ones whose queue is among `serving`, the queues of the worker
    running that job.

    Every finishing step locks its submission's row first, so of two last steps finishing at
    once the later one reads the other's outcome and completes the submission. (SQLite has no
    row locks and needs none: its writers take turns, and the read comes after the write.)"""
    submission = step_run.submission
    db.session.execute(
        db.select(Submission.id).filter_by(id=submission.id).with_for_update())
    # Read afresh, after the lock: other workers' steps change.
    steps = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission.id).order_by(StepRun.position)
        .execution_options(populate_existing=True)
    ).scalars().all()
    statuses = {other.name: other.status for other in steps}
    ready = ready_steps(statuses)
    queued, run_on = [], []
    if ready:
        for waiting_step in (other for other in steps if other.name in ready):
            step = STEP_BY_NAME[waiting_step.name]
            if job_id and step.inline and step.queue in serving:
                if claim_to_run(waiting_step, job_id):
                    run_on.append(waiting_step)
            elif claim_for_queue(waiting_step):
                queued.append(waiting_step)
    elif all(status in DONE_STATUSES for status in statuses.values()):
        _complete(submission.id, submission)
    db.session.commit()
    enqueue_claimed(submission.id, queued)
    return run_on


def start_processing(submission):
    if submission.status != "received":
        return  # read in this transaction: the first step has moved it on already
    won = db.session.execute(
        update(Submission)
        .where(Submission.id == submission.id, Submission.status == "received")
        .values(status="processing", status_detail="Checks are running")
        .execution_options(synchronize_session=False)
    ).rowcount
    if won:
        _written(submission, status="processing", status_detail="Checks are running")
        record_submission(submission, "processing", "Checks are running")


def _written(row, **values):
    """What an UPDATE statement just wrote, set on the loaded row without writing it again."""
    for name, value in values.items():
        set_committed_value(row, name, value)
