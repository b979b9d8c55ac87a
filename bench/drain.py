"""Deadline drain: how fast `python worker.py` processes empty a backlog of real submissions,
against stock RQ draining empty jobs on the same machine in the same run.

A cohort's text essays are accepted (intake, in this process) with no worker running, which
leaves one scan job each in Redis, as at a deadline. Then W worker processes start and run the
whole pipeline: clamd scan, store, built-in similarity, student records (skipped: not
configured), receipt email (outbox) and text preview, six steps a submission. The baseline is
W stock `rq worker --burst` processes (RQ's forking Worker, as `rq worker` runs it) draining
as many `os.getpid` jobs. Rate = jobs / (last job's end - first job's start), from the step
rows (ours) and RQ's job records (stock), so process start-up is left out of both; the wall
time from the first process start to the drained queue is shown too. With `--before REV`, a
third variant runs `worker.py` and the job code of commit REV (a git worktree) on the same
stack, for a before/after in one run. Rounds take turns in alternating order; each round uses a
new assignment, so the similarity check compares with the same number of earlier essays.
"""

import argparse
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.report import Table
from bench.seed import seed_cohort
from bench.stack import ROOT, BenchError, Stack, log_tail, plan_from

QUICK = {"submissions": 60, "workers": 2, "rounds": 1}
FULL = {"submissions": 120, "workers": 2, "rounds": 2}
STEPS_PER_SUBMISSION = 6
DRAIN_LIMIT_SECONDS = 900
WORDS = ("deadline", "submission", "argument", "evidence", "method", "result", "analysis",
         "theory", "sample", "measure", "history", "context", "source", "claim", "model",
         "student", "course", "answer", "question", "figure", "table", "review", "draft")


def run(quick, database, keep=False, before=None, plan=None):
    plan = plan or (QUICK if quick else FULL)
    variants = ["ours", "stock"] + (["before"] if before else [])
    with Stack("drain", database=database, clamd=True, keep=keep) as stack, \
            worktree(before) as before_root:
        if stack.clamd_socket is None:
            raise BenchError("clamd is not installed: the drain measures the real scan")
        app = stack.app()
        rates = {variant: [] for variant in variants}
        walls = {variant: [] for variant in variants}
        with app.app_context():
            for round_number in range(plan["rounds"]):
                order = variants if round_number % 2 == 0 else list(reversed(variants))
                for variant in order:
                    if variant == "stock":
                        jobs, span, wall = drain_stock(stack, plan)
                    else:
                        root = before_root if variant == "before" else ROOT
                        jobs, span, wall = drain_ours(stack, plan, root)
                    rates[variant].append(jobs / span)
                    walls[variant].append(wall)
                    print(f"  round {round_number + 1} {variant}: {jobs} jobs in {span:.1f} s "
                          f"({jobs / span:.1f}/s; {wall:.1f} s from the first process start)",
                          flush=True)
        return [report(plan, database, rates, walls, before)]


def report(plan, database, rates, walls, before):
    ours, stock = statistics.median(rates["ours"]), statistics.median(rates["stock"])
    table = Table(f"Deadline drain, {plan['workers']} worker processes ({database})",
                  "worker.py", "stock rq worker")
    table.add("jobs per second", ours, stock, "1/s", better="higher")
    table.add("submissions per second", ours / STEPS_PER_SUBMISSION,
              stock / STEPS_PER_SUBMISSION, "1/s", better="higher")
    table.add("wall time, first start to drained", statistics.median(walls["ours"]),
              statistics.median(walls["stock"]), "s")
    verdict = "met" if ours / stock >= 1.0 else "NOT met"
    table.note(f"goal: worker.py's real pipeline at least as many jobs/s as stock RQ's empty "
               f"jobs (ratio >= 1.0): {verdict} ({ours / stock:.2f}x)")
    if before:
        then = statistics.median(rates["before"])
        table.note(f"worker.py at {before}: {then:.1f} jobs/s, {then / stock:.2f}x stock; "
                   f"now/then {ours / then:.2f}x; wall "
                   f"{statistics.median(walls['before']):.1f} s")
    paired = statistics.median(o / b for o, b in zip(rates["ours"], rates["stock"], strict=True))
    table.note(f"median of the rounds' own ratios (each pair ran back to back, so a load that "
               f"drifts between rounds weighs less): {paired:.2f}x")
    for variant, values in rates.items():
        table.note(f"{variant} rounds: " + ", ".join(f"{value:.1f}" for value in values)
                   + " jobs/s")
    table.note(f"{plan['rounds']} round(s) of {plan['submissions']} text submissions "
               f"({plan['submissions'] * STEPS_PER_SUBMISSION} jobs) per variant")
    return table


@contextmanager
def worktree(rev):
    if not rev:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="bench-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                       check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def essay(seed):
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."
                 for _ in range(25)]
    return ("\n".join(sentences) + "\n").encode()


def accept_backlog(stack, count):
    """`count` essays accepted by intake as a deadline would bring them: one scan job each."""
    from werkzeug.datastructures import FileStorage

    from app.extensions import db
    from app.models import Assignment, User
    from app.submissions.intake import accept_upload

    cohort = seed_cohort(count)
    assignment = db.session.get(Assignment, cohort.assignment_id)
    assignment.allowed_types = "txt"
    db.session.commit()
    ids = []
    for index, (user_id, _token, _email) in enumerate(cohort.students):
        upload = FileStorage(stream=io.BytesIO(essay(index)), filename=f"essay{index}.txt")
        submission, created = accept_upload(db.session.get(User, user_id),
                                            db.session.get(Assignment, cohort.assignment_id),
                                            upload)
        if not created:
            raise BenchError("intake replayed a submission it should have created")
        ids.append(submission.id)
    db.session.remove()
    return ids


def drain_ours(stack, plan, root):
    from app.extensions import db
    from app.models import StepRun, Submission

    ids = accept_backlog(stack, plan["submissions"])
    started = time.monotonic()
    processes = [spawn(stack, f"drain-worker{index}", [sys.executable, "worker.py"], root)
                 for index in range(plan["workers"])]
    try:
        deadline = started + DRAIN_LIMIT_SECONDS
        while True:
            statuses = dict(db.session.execute(
                db.select(Submission.status, db.func.count()).where(Submission.id.in_(ids))
                .group_by(Submission.status)).all())
            db.session.remove()
            if statuses.get("completed", 0) == len(ids):
                break
            if set(statuses) - {"received", "processing", "completed"}:
                raise BenchError(f"submissions ended otherwise: {statuses}")
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in processes):
                raise BenchError(f"not drained ({statuses}); a worker log ends:\n"
                                 f"{log_tail(processes[0][1])}")
            time.sleep(0.05)
        wall = time.monotonic() - started
    finally:
        for process, _ in processes:
            stack.stop(process)
    first, last, jobs = db.session.execute(
        db.select(db.func.min(StepRun.started_at), db.func.max(StepRun.finished_at),
                  db.func.count()).where(StepRun.submission_id.in_(ids))).one()
    db.session.remove()
    if jobs != len(ids) * STEPS_PER_SUBMISSION:
        raise BenchError(f"{jobs} step rows for {len(ids)} submissions")
    return jobs, (last - first).total_seconds(), wall


def drain_stock(stack, plan):
    from rq import Queue
    from rq.job import Job

    from app.extensions import get_redis

    queue = Queue("stock", connection=get_redis())
    jobs = [queue.enqueue(os.getpid, result_ttl=3600)
            for _ in range(plan["submissions"] * STEPS_PER_SUBMISSION)]
    rq = Path(sys.executable).parent / "rq"
    started = time.monotonic()
    processes = [spawn(stack, f"stock-worker{index}",
                       [str(rq), "worker", "--burst", "--url", stack.redis_url, "stock"], ROOT)
                 for index in range(plan["workers"])]
    for process, log in processes:
        if process.wait(DRAIN_LIMIT_SECONDS):
            raise BenchError(f"rq worker exited {process.returncode}:\n{log_tail(log)}")
    wall = time.monotonic() - started
    finished = Job.fetch_many([job.id for job in jobs], connection=get_redis())
    if any(job is None or not job.is_finished for job in finished):
        raise BenchError("some stock jobs did not finish")
    span = (max(job.ended_at for job in finished)
            - min(job.started_at for job in finished)).total_seconds()
    queue.delete(delete_jobs=True)
    return len(jobs), span, wall


def spawn(stack, name, command, root):
    # Every variant at the same CPU priority as stock RQ: a throughput comparison, with no web
    # process to yield to.
    return stack._spawn(name, command, env=stack.env(WORKER_NICENESS=0),
                        stop_signal=signal.SIGTERM, root=root)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--before", metavar="REV", help="also run worker.py as of REV")
    parser.add_argument("--submissions", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    plan = plan_from(args, QUICK if args.quick else FULL, ("submissions", "workers", "rounds"))
    print(f"python -m bench.drain {' '.join(argv if argv is not None else sys.argv[1:])}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for table in run(args.quick, args.database, keep=args.keep, before=args.before,
                     plan=plan):
        print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
