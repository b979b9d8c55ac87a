"""Job modules loaded before the fork: what `python worker.py` gains per job by importing every
job module once (worker.preload_job_modules) instead of in each forked work horse. Both variants
are the real forking worker (worker.build_worker), each batch run in a fresh worker process in
burst mode, on the same queue and the same kind of ready step; rounds alternate the order. The
time is the worker's own `work()` call, so process start and app creation are left out.
"""

import json
import statistics
import subprocess
import sys

from bench.pipeline_overhead import check_done, enqueue, ready_submissions, stored_sample
from bench.report import Table
from bench.seed import seed_cohort
from bench.stack import ROOT, Stack

STEPS = {"email": "email", "thumbnail": "media"}
VARIANTS = ("preloaded", "imported per job")
QUICK = {"jobs": 20, "rounds": 4}
FULL = {"jobs": 60, "rounds": 6}


def run(quick, database, keep=False):
    plan = QUICK if quick else FULL
    with Stack("preload", database=database, clamd=False, keep=keep) as stack:
        app = stack.app()
        with app.app_context():
            return [measure(stack, plan, database)]


def measure(stack, plan, database):
    from app.extensions import db

    cohort = seed_cohort(1)
    stored = stored_sample(stack)
    per_job = {(step, variant): [] for step in STEPS for variant in VARIANTS}
    for round_number in range(plan["rounds"]):
        for step, queue_name in STEPS.items():
            order = VARIANTS if round_number % 2 else tuple(reversed(VARIANTS))
            for variant in order:
                submissions = ready_submissions(cohort, stored, step, plan["jobs"])
                for submission_id in submissions:
                    enqueue(step, "ours", submission_id)
                db.session.remove()
                seconds = run_worker(stack, queue_name, variant == "preloaded")
                check_done(submissions, step)
                per_job[step, variant].append(seconds / plan["jobs"] * 1000)

    result = Table(f"Forked work horses, job modules loaded once vs per job ({database})",
                   "preloaded", "imported per job")
    for step in STEPS:
        ours, baseline = per_job[step, "preloaded"], per_job[step, "imported per job"]
        result.add(f"{step}: wall time per job", statistics.median(ours),
                   statistics.median(baseline), "ms")
        paired = statistics.median(o / b for o, b in zip(ours, baseline, strict=True))
        result.note(f"{step}: preloaded/per-job, median of the rounds' ratios: {paired:.2f}x; "
                    f"rounds preloaded {fmt(ours)}, per job {fmt(baseline)} ms")
    result.note(f"{plan['rounds']} rounds of {plan['jobs']} jobs per step and variant, "
                "one fresh `worker.py`-built worker process per batch")
    return result


def fmt(values):
    return "/".join(f"{value:.1f}" for value in values)


def run_worker(stack, queue_name, preload):
    """Seconds the worker's work() took to drain `queue_name`, in a fresh process."""
    finished = subprocess.run(
        [sys.executable, "-m", "bench.worker_preload", queue_name, "1" if preload else "0"],
        cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=600, check=False)
    if finished.returncode:
        raise RuntimeError(f"worker exited {finished.returncode}:\n{finished.stderr[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])["seconds"]


def child(queue_name, preload):
    import logging
    import time

    import worker
    from app import create_app

    logging.basicConfig(level=logging.WARNING)
    with create_app().app_context():
        drainer = worker.build_worker([queue_name], preload=preload)
        started = time.perf_counter()
        drainer.work(burst=True, logging_level="WARNING")
        print(json.dumps({"seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2] == "1")
