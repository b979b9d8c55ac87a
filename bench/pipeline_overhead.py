"""Pipeline overhead: what our job wrapper (jobs.runner.run_step: load the step, record running
and succeeded as status rows and events, publish them, count metrics, look for what comes next)
costs per step, against a bare RQ job that loads the same rows, calls the same step function
(jobs.<step>.perform) and commits. Both run on the same in-process SimpleWorker, on the same
queue, with the same enqueue options, one batch of each in every round, in alternating order.
On a shared machine the load drifts between rounds, so the ratio is the median of the rounds'
own ratios; times are medians over the rounds, wall clock and this process's CPU time (the
database server's work shows in the wall clock only). Measured on two leaf steps (nothing is
queued after them): the receipt email (written to the outbox) and the preview of a 100 KB
one-page PDF. Goal: under 1.5x.
"""

import importlib
import statistics
import time
from datetime import timedelta

from rq import SimpleWorker
from sqlalchemy import event

from bench.report import Table
from bench.seed import scanned_pdf, seed_cohort
from bench.stack import Stack

MEASURED_STEPS = ("email", "thumbnail")
VARIANTS = ("ours", "bare")
QUICK = {"jobs": 10, "rounds": 6}
FULL = {"jobs": 30, "rounds": 8}


def bare_step(submission_id, step_name):
    """The same work without the wrapper: load the step, run it, commit."""
    from app.extensions import db
    from app.models import StepRun

    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name=step_name)
    ).scalar_one()
    detail = importlib.import_module(f"jobs.{step_name}").perform(step_run.submission, step_run)
    db.session.commit()
    return detail


def run(quick, database, keep=False):
    plan = QUICK if quick else FULL
    with Stack("overhead", database=database, clamd=False, keep=keep) as stack:
        app = stack.app()
        with app.app_context():
            return [measure(stack, plan, database)]


def measure(stack, plan, database):
    from app.extensions import db, get_redis

    cohort = seed_cohort(1)
    stored = stored_sample(stack)
    worker = SimpleWorker(["email", "media"], connection=get_redis())
    statements = StatementCounter(db.engine)
    wall = {(step, variant): [] for step in MEASURED_STEPS for variant in VARIANTS}
    cpu = {key: [] for key in wall}
    sql = {}
    # One unmeasured batch of each first: imports, connections and caches warm up.
    for round_number in range(plan["rounds"] + 1):
        for step in MEASURED_STEPS:
            for variant in VARIANTS if round_number % 2 else reversed(VARIANTS):
                count = plan["jobs"] if round_number else 5
                submissions = ready_submissions(cohort, stored, step, count)
                for submission_id in submissions:
                    enqueue(step, variant, submission_id)
                db.session.remove()
                statements.count = 0
                started, started_cpu = time.perf_counter(), time.process_time()
                worker.work(burst=True, logging_level="WARNING")
                took, took_cpu = (time.perf_counter() - started,
                                  time.process_time() - started_cpu)
                db.session.remove()
                check_done(submissions, step)
                if round_number:
                    wall[step, variant].append(took / count * 1000)
                    cpu[step, variant].append(took_cpu / count * 1000)
                    sql[step, variant] = statements.count / count
    statements.close()

    result = Table(f"Pipeline overhead per step, in-process SimpleWorker ({database})",
                   "run_step (ours)", "bare RQ job")
    for step in MEASURED_STEPS:
        ours, bare = wall[step, "ours"], wall[step, "bare"]
        result.add(f"{step}: wall time per job", statistics.median(ours),
                   statistics.median(bare), "ms")
        result.add(f"{step}: worker CPU time per job", statistics.median(cpu[step, "ours"]),
                   statistics.median(cpu[step, "bare"]), "ms")
        result.add(f"{step}: SQL statements per job", sql[step, "ours"], sql[step, "bare"],
                   better=None)
        paired = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
        verdict = "met" if paired < 1.5 else "NOT met"
        result.note(f"{step}: ours/bare, median of the rounds' ratios: {paired:.2f}x "
                    f"(goal under 1.5x: {verdict}); the wrapper adds "
                    f"{statistics.median(ours) - statistics.median(bare):.1f} ms per job; "
                    f"rounds ours {fmt_list(ours)}, bare {fmt_list(bare)} ms")
    result.note(f"{plan['rounds']} rounds of {plan['jobs']} jobs per step and variant; "
                "enqueueing is not timed")
    return result


def fmt_list(values):
    return "/".join(f"{value:.1f}" for value in values)


class StatementCounter:
    def __init__(self, engine):
        self.engine = engine
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args):
        self.count += 1

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._seen)


def stored_sample(stack):
    from flask import current_app

    from app.services.storage import file_sha256, storage_for

    incoming = stack.workdir / "sample.pdf"
    incoming.write_bytes(scanned_pdf(100_000))
    sha256 = file_sha256(incoming)
    return str(storage_for(current_app).store(str(incoming), sha256)), sha256


def ready_submissions(cohort, stored, step, count):
    """Submissions whose scan and store are done and whose leaf steps are all queued, as they
    are just after the store step; returns their ids."""
    from app.extensions import db
    from app.models import Submission, User, utcnow
    from app.pipeline import create_steps

    path, sha256 = stored
    student = db.session.get(User, cohort.students[0][0])
    now = utcnow()
    submissions = []
    for _ in range(count):
        submission = Submission(
            assignment_id=cohort.assignment_id, student=student, filename="essay.pdf",
            content_type="application/pdf", size=100_000, sha256=sha256, stored_path=path,
            received_at=now - timedelta(seconds=1), status="processing",
            status_detail="Checks are running")
        create_steps(submission)
        for step_run in submission.steps:
            if step_run.name in ("scan", "store"):
                step_run.status, step_run.attempts = "succeeded", 1
            else:
                step_run.status, step_run.job_id = "queued", f"bench-{step_run.name}-{id(step_run)}"
        submissions.append(submission)
    db.session.add_all(submissions)
    db.session.commit()
    return [submission.id for submission in submissions]


def enqueue(step_name, variant, submission_id):
    from app.extensions import db
    from app.models import StepRun
    from app.pipeline import enqueue_step, queue, retry_policy
    from app.steps import STEP_BY_NAME

    step_run = db.session.execute(
        db.select(StepRun).filter_by(submission_id=submission_id, name=step_name)
    ).scalar_one()
    if variant == "ours":
        enqueue_step(step_run)
        return
    step = STEP_BY_NAME[step_name]
    queue(step.queue).enqueue(
        bare_step, submission_id, step_name, job_id=step_run.job_id, job_timeout=step.timeout,
        retry=retry_policy(step), result_ttl=3600,
        description=f"{step_name} submission {submission_id}",
        meta={"submission_id": submission_id, "step": step_name},
    )


def check_done(submission_ids, step_name):
    """Every job of the batch did its work (a failed job would make the timing meaningless)."""
    from app.extensions import db
    from app.models import OutboxEmail, Submission

    if step_name == "email":
        keys = [f"receipt:{submission_id}" for submission_id in submission_ids]
        missing = len(keys) - db.session.scalar(
            db.select(db.func.count()).select_from(OutboxEmail)
            .where(OutboxEmail.dedupe_key.in_(keys), OutboxEmail.sent_at.is_not(None)))
    else:
        missing = db.session.scalar(
            db.select(db.func.count()).select_from(Submission)
            .where(Submission.id.in_(submission_ids), Submission.thumbnail_path.is_(None)))
    db.session.remove()
    if missing:
        raise RuntimeError(f"{missing} of {len(submission_ids)} {step_name} jobs did no work")
