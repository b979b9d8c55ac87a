"""Worker memory over many jobs: the resident size of one `python worker.py` process while it
runs N jobs in its own process (similarity check, receipt email, student records), sampled
every half second. Two runs: starting afresh never (WORKER_JOBS_PER_PROCESS past N), which
shows whether anything a job leaves behind adds up, and at the default, which bounds it
whatever the jobs do. Each essay is a different text, so the similarity check's shingle cache
fills as it would at a deadline."""

import signal
import statistics
import sys
import time

from bench.drain import essay
from bench.report import Table
from bench.seed import seed_cohort
from bench.stack import BenchError, Stack, log_tail, rss_kib

QUICK = {"jobs": 1500}
FULL = {"jobs": 10_002}  # over 10,000, three steps a submission
STEPS = ("plagiarism", "email", "admin_sync")


def run(quick, database, keep=False, plan=None):
    plan = plan or (QUICK if quick else FULL)
    with Stack("memory", database=database, clamd=False, keep=keep) as stack:
        with stack.app().app_context():
            never = measure(stack, plan["jobs"], plan["jobs"] * 10)
            default = measure(stack, plan["jobs"], None)
    table = Table(f"Worker memory over {plan['jobs']:,} jobs, one worker.py ({database})",
                  "default", "never afresh")
    for label, index in (("RSS after the first tenth", 0), ("RSS at half way", 1),
                         ("RSS at the end", 2), ("largest RSS seen", 3)):
        table.add(label, default["rss"][index] / 1024, never["rss"][index] / 1024, "MiB")
    table.add("jobs per second", default["rate"], never["rate"], "1/s", better="higher")
    table.note(f"jobs: {', '.join(STEPS)} in turn, in the worker's own process; RSS of the "
               "worker process (after a fresh start, the same process)")
    table.note(f"growth from the first tenth to the end, never afresh: "
               f"{(never['rss'][2] - never['rss'][0]) / 1024:+.1f} MiB; default "
               f"(WORKER_JOBS_PER_PROCESS): {(default['rss'][2] - default['rss'][0]) / 1024:+.1f} "
               f"MiB, restarts seen: {default['restarts']}")
    return [table, previews(plan["jobs"] // 5)]


def previews(count):
    """The preview child's memory over `count` previews (text, picture and PDF in turn), never
    replaced, against the default that replaces it every RENDERS_PER_PROCESS previews."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from app.services.preview_process import RENDERS_PER_PROCESS, PreviewProcess
    from bench.seed import scanned_pdf

    with tempfile.TemporaryDirectory(prefix="bench-previews-") as folder:
        folder = Path(folder)
        samples = []
        for index in range(30):
            text = folder / f"essay{index}.txt"
            text.write_bytes(essay(index))
            picture = folder / f"photo{index}.png"
            Image.new("RGB", (800 + index, 600), (index * 8, 90, 160)).save(picture)
            pdf = folder / f"scan{index}.pdf"
            pdf.write_bytes(scanned_pdf(20_000 + index))
            samples += [(text, "text/plain"), (picture, "image/png"), (pdf, "application/pdf")]
        figures = {}
        for label, per_process in (("default", RENDERS_PER_PROCESS), ("never", count + 1)):
            process = PreviewProcess(renders_per_process=per_process)
            sampled, targets = [], [count // 10, count // 2, count - 1]
            try:
                for index in range(count):
                    path, content_type = samples[index % len(samples)]
                    process.render(path, content_type, path.name, folder / "out.png", timeout=60)
                    # Just after a replacement there is no child: the next preview starts one.
                    if targets and index + 1 >= targets[0] and process.process is not None:
                        sampled.append(rss_kib(process.process.pid))
                        targets.pop(0)
            finally:
                process.stop()
            figures[label] = sampled
    table = Table(f"Preview child memory over {count:,} previews", "default", "never replaced")
    for label, index in (("RSS after the first tenth", 0), ("RSS at half way", 1),
                         ("RSS at the end", 2)):
        table.add(label, figures["default"][index] / 1024, figures["never"][index] / 1024,
                  "MiB")
    table.note(f"text, PNG and one-page PDF previews in turn; the default replaces the child "
               f"every {RENDERS_PER_PROCESS} previews")
    return table


def measure(stack, jobs, jobs_per_process):
    from app.extensions import db
    from app.models import StepRun

    ids = ready_steps(stack, jobs)
    env = {} if jobs_per_process is None else {"WORKER_JOBS_PER_PROCESS": jobs_per_process}
    process, log = stack._spawn(f"memory-worker-{jobs_per_process}",
                                [sys.executable, "worker.py", *queues()],
                                env=stack.env(**env), stop_signal=signal.SIGTERM)
    samples, started = [], time.monotonic()
    try:
        while True:
            done = db.session.scalar(
                db.select(db.func.count()).select_from(StepRun)
                .where(StepRun.submission_id.in_(ids), StepRun.name.in_(STEPS),
                       StepRun.status.in_(("succeeded", "skipped"))))
            db.session.remove()
            if process.poll() is not None:
                raise BenchError(f"worker exited:\n{log_tail(log)}")
            samples.append((done, rss_kib(process.pid)))
            if done >= jobs:
                break
            if time.monotonic() - started > 1800:
                raise BenchError(f"{done} of {jobs} jobs done in 30 minutes")
            time.sleep(0.5)
        took = time.monotonic() - started
    finally:
        stack.stop(process)
    restarts = log.read_text(errors="replace").count("event=worker_restarted")

    def at(fraction):
        return next(rss for done, rss in samples if done >= jobs * fraction)

    return {"rss": [at(0.1), at(0.5), samples[-1][1], max(rss for _, rss in samples)],
            "rate": jobs / took, "restarts": restarts,
            "median_rss": statistics.median(rss for _, rss in samples)}


def queues():
    from app.steps import STEP_BY_NAME

    return sorted({STEP_BY_NAME[name].queue for name in STEPS})


def ready_steps(stack, jobs):
    """Submissions with their file stored and the measured steps queued, `jobs` steps in all."""
    from flask import current_app

    from app.extensions import db
    from app.models import Submission, User, utcnow
    from app.pipeline import claim_for_queue, create_steps, enqueue_claimed
    from app.services.storage import file_sha256, storage_for

    cohort = seed_cohort(2)
    storage = storage_for(current_app)
    student = db.session.get(User, cohort.students[0][0])
    if jobs % len(STEPS):
        raise BenchError(f"use a multiple of {len(STEPS)} jobs")
    count = jobs // len(STEPS)
    submissions = []
    for index in range(count):
        incoming = stack.workdir / f"essay{index}.txt"
        incoming.write_bytes(essay(index))
        sha256 = file_sha256(incoming)
        submission = Submission(
            assignment_id=cohort.assignment_id, student=student, filename="essay.txt",
            content_type="text/plain", size=incoming.stat().st_size, sha256=sha256,
            stored_path=str(storage.store(str(incoming), sha256)), received_at=utcnow(),
            status="processing", status_detail="Checks are running")
        create_steps(submission)
        for step_run in submission.steps:
            if step_run.name not in STEPS:
                step_run.status, step_run.attempts = "succeeded", 1
        submissions.append(submission)
    db.session.add_all(submissions)
    db.session.commit()
    for submission in submissions:
        claimed = [s for s in submission.steps if s.name in STEPS and claim_for_queue(s)]
        db.session.commit()
        enqueue_claimed(submission.id, claimed)
    ids = [submission.id for submission in submissions]
    db.session.remove()
    return ids


if __name__ == "__main__":
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="python -m bench.worker_memory")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    chosen = {"jobs": args.jobs} if args.jobs else None
    for result in run(args.quick, args.database, plan=chosen):
        print(result.render(), flush=True)
