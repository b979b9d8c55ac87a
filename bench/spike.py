"""Deadline spike: N students each submit once, arriving evenly within a window (2,000 in a
minute in full mode), through the JSON API to gunicorn (gevent, 2 processes) with 4
`python worker.py` processes (at a lower CPU priority than the web, as if on their own
machines), real clamd and a real SMTP server. INTAKE_MAX_BACKLOG is set low so intake answers
some uploads 503 with Retry-After; the client retries them with the same Idempotency-Key, as
the upload page does. Measured: how long students waited for a receipt,
how many were refused and later accepted, the time until every submission is `completed`, and
that none was lost or doubled (one submission and exactly one receipt email per student).
The baseline is the same spike against bench/inline_app.py (every step in the request, so no
workers) on the same stack, with a new cohort. With `before=REV` (`python -m bench.spike
--before REV`), the same spike also runs against the web and workers of commit REV (a git
worktree) on the same stack, for a before/after in one run.
"""

import json
import subprocess
import sys
import time

from bench.report import Table
from bench.seed import scanned_pdf, seed_cohort
from bench.stack import ROOT, BenchError, Stack, percentile, plan_from
from tests.smtp import SmtpServer

QUICK = {"students": 60, "seconds": 5, "backlog": 60, "drain_seconds": 300}
FULL = {"students": 2000, "seconds": 60, "backlog": 600, "drain_seconds": 1800}
WORKERS = 4
# On their own machines workers would not slow the web process down; on one shared box, a
# lower CPU priority keeps that so (the upload is what must be quick; processing can wait).
WORKER_NICENESS = 10
CLIENT_THREADS = 400
FILE_BYTES = 50_000
TERMINAL = ("completed", "rejected", "needs_attention")


def run(quick, database, keep=False, before=None, inline=True, plan=None):
    from bench.drain import worktree

    plan = plan or (QUICK if quick else FULL)
    variants = ["ours", *(["before"] if before else []), *(["inline"] if inline else [])]
    smtp = SmtpServer().start()
    try:
        with Stack("spike", database=database, keep=keep) as stack, \
                worktree(before) as before_root:
            sample = stack.workdir / "essay.pdf"
            sample.write_bytes(scanned_pdf(FILE_BYTES))
            app = stack.app()
            results = {}
            for variant in variants:
                with app.app_context():
                    cohort = seed_cohort(plan["students"])
                print(f"  spike: {variant}, {plan['students']} students in {plan['seconds']} s …",
                      flush=True)
                results[variant] = spike(stack, app, smtp, cohort, sample, variant, plan,
                                         before_root if variant == "before" else ROOT)
            tables = []
            if before:
                tables.append(table(results, plan, database, "before",
                                    f"worker.py at {before}"))
            if inline:
                tables.append(table(results, plan, database, "inline", "inline baseline"))
            return tables
    finally:
        smtp.stop()


def spike(stack, app, smtp, cohort, sample, variant, plan, root=ROOT):
    if variant in ("ours", "before"):
        web = stack.web("wsgi:app", name=f"web-{variant}", workers=2, root=root,
                        SMTP_URL=smtp.url, INTAKE_MAX_BACKLOG=plan["backlog"])
        workers = stack.workers(WORKERS, niceness=WORKER_NICENESS, root=root, SMTP_URL=smtp.url)
        stack.wait_for_workers(WORKERS)
        path = f"/api/v1/assignments/{cohort.assignment_id}/submissions"
    else:
        web = stack.web("bench.inline_app:app", name="web-inline", workers=2, SMTP_URL=smtp.url,
                        INTAKE_MAX_BACKLOG=10**9)
        workers = []
        path = f"/inline/assignments/{cohort.assignment_id}/submissions"
    try:
        web.warm_up(cohort.staff_token)
        outcome = upload(stack, variant, {
            "port": web.port, "path": path, "tokens": [s[1] for s in cohort.students],
            "file": str(sample), "mode": "open", "count": plan["students"],
            "seconds": plan["seconds"], "concurrency": CLIENT_THREADS,
        })
        # Inline, whatever a request did not finish, nothing will: no need to wait for it.
        drain_seconds = plan["drain_seconds"] if variant in ("ours", "before") else 5
        with app.app_context():
            state = wait_until_processed(cohort, drain_seconds)
    finally:
        for process in [web.process, *workers]:
            stack.stop(process)
    return summarize(outcome, state, smtp, cohort)


def upload(stack, variant, spec):
    spec_path = stack.workdir / f"spike-{variant}.json"
    out_path = stack.workdir / f"spike-{variant}.out.json"
    spec_path.write_text(json.dumps(spec))
    try:
        subprocess.run([sys.executable, "-m", "bench.uploader", str(spec_path), str(out_path)],
                       cwd=ROOT, check=True, timeout=spec["seconds"] + 900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"the upload client failed: {exc}") from None
    return json.loads(out_path.read_text())


def wait_until_processed(cohort, seconds):
    """Poll the database until every submission of the cohort is completed, rejected or needs
    attention; returns the statuses, submissions per student and the last step's finish."""
    from app.extensions import db
    from app.models import StepRun, Submission

    deadline = time.monotonic() + seconds
    while True:
        rows = db.session.execute(
            db.select(Submission.id, Submission.student_id, Submission.status)
            .where(Submission.assignment_id == cohort.assignment_id)
        ).all()
        db.session.remove()
        if all(row.status in TERMINAL for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    last_finished = db.session.scalar(
        db.select(db.func.max(StepRun.finished_at)).join(Submission)
        .where(Submission.assignment_id == cohort.assignment_id))
    db.session.remove()
    per_student = {}
    for row in rows:
        per_student[row.student_id] = per_student.get(row.student_id, 0) + 1
    return {"statuses": [row.status for row in rows], "ids": {row.id for row in rows},
            "per_student": per_student,
            "last_finished": last_finished.timestamp() if last_finished else None}


def summarize(outcome, state, smtp, cohort):
    records = outcome["records"]
    accepted = [r for r in records if "answered" in r]
    emails = {}
    for message in smtp.messages:
        emails[message["To"]] = emails.get(message["To"], 0) + 1
    # Upload i is student i's (one upload each): one receipt if it was accepted, else none.
    wrong_emails = sum(1 for r in records
                       if emails.get(cohort.students[r["index"]][2], 0)
                       != (1 if "answered" in r else 0))
    returned_ids = {r["submission_id"] for r in accepted}
    return {
        "accepted": len(accepted),
        "refused_then_accepted": sum(1 for r in accepted if r["statuses"][0] in (503, 429)),
        "gave_up": sum(1 for r in records
                       if "answered" not in r and r["statuses"][-1] in (0, 429, 503)),
        "errors": sum(1 for r in records
                      if "answered" not in r and r["statuses"][-1] not in (0, 429, 503)),
        "failure_statuses": sorted({s for r in records for s in r["statuses"]
                                    if s not in (201, 202)}),
        "waits": [r["answered"] - r["started"] for r in accepted],
        "completed": state["statuses"].count("completed"),
        "not_completed": sum(1 for status in state["statuses"] if status != "completed"),
        "accepted_missing": len(returned_ids - state["ids"]),
        "doubled": sum(1 for count in state["per_student"].values() if count > 1),
        "until_all_done": (state["last_finished"] - outcome["wall_began"]
                           if state["last_finished"] else None),
        "after_last_arrival": (state["last_finished"] - outcome["wall_began"]
                               - max(r["started"] for r in records)
                               if state["last_finished"] else None),
        "fresh_waits": [r["answered"] - r["started"] for r in accepted
                        if r["statuses"][0] not in (503, 429)],
        "wrong_emails": wrong_emails,
    }


def table(results, plan, database, baseline="inline", baseline_name="inline baseline"):
    ours, inline = results["ours"], results[baseline]
    result = Table(f"Deadline spike, {plan['students']:,} students within {plan['seconds']} s "
                   f"({database})", "queued (ours)", baseline_name)
    result.add("uploads accepted", ours["accepted"], inline["accepted"], better=None)
    result.add("refused with 503/429, accepted on retry", ours["refused_then_accepted"],
               inline["refused_then_accepted"], better=None)
    result.add("not accepted: still busy after 8 attempts", ours["gave_up"],
               inline["gave_up"], better=None)
    result.add("not accepted: an error page (not retried)", ours["errors"], inline["errors"],
               better=None)
    for fraction in (0.50, 0.99):
        result.add(f"wait for the receipt p{int(fraction * 100)}",
                   percentile(ours["waits"], fraction), percentile(inline["waits"], fraction),
                   "s")
    result.add("wait for the receipt max", max(ours["waits"], default=None),
               max(inline["waits"], default=None), "s")
    result.add("receipt p99, uploads not refused first", percentile(ours["fresh_waits"], 0.99),
               percentile(inline["fresh_waits"], 0.99), "s")
    result.add("time until every submission completed", ours["until_all_done"],
               inline["until_all_done"], "s")
    result.add("  of which after the last arrival", ours["after_last_arrival"],
               inline["after_last_arrival"], "s")
    result.add("submissions completed", ours["completed"], inline["completed"], better=None)
    result.add("recorded but never completed", ours["not_completed"]
               + ours["accepted_missing"], inline["not_completed"] + inline["accepted_missing"],
               better=None)
    result.add("students with two submissions", ours["doubled"], inline["doubled"], better=None)
    result.add("students with a wrong number of receipt emails", ours["wrong_emails"],
               inline["wrong_emails"], better=None)
    result.note(f"INTAKE_MAX_BACKLOG={plan['backlog']} for ours (the inline app has no queue); "
                f"{WORKERS} worker.py processes at nice {WORKER_NICENESS}; "
                f"{FILE_BYTES // 1000} KB scanned-PDF uploads; "
                "retries follow Retry-After with backoff, up to 8 attempts, as the upload page")
    for name, figures in (("ours", ours), (baseline, inline)):
        if figures["failure_statuses"]:
            result.note(f"{name}: statuses other than accepted: {figures['failure_statuses']}")
    result.note("waits run from the student pressing submit to the receipt, retries included; "
                "'time until every submission completed' runs from the first upload to the last "
                "step finished")
    return result


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.spike")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--students", type=int)
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--before", metavar="REV")
    parser.add_argument("--no-inline", action="store_true")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.no_inline and not args.before:
        # Every figure is shown against a baseline run beside it: without one there is no table.
        parser.error("--no-inline needs --before REV, the baseline to run beside ours")
    plan = plan_from(args, QUICK if args.quick else FULL, ("students", "seconds", "backlog"))
    print(f"python -m bench.spike {' '.join(argv if argv is not None else sys.argv[1:])}",
          flush=True)
    for result in run(args.quick, args.database, keep=args.keep, before=args.before,
                      inline=not args.no_inline, plan=plan):
        print(result.render() + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
