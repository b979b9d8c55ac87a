"""Intake: 50 concurrent clients upload 100 KB and 1 MB PDFs through the JSON API to gunicorn
(gevent, WEB_CONCURRENCY=2). Ours accepts, records and queues (the workers run elsewhere, so
none runs here); the baseline, bench/inline_app.py, does the same intake and then every step in
the request. Both gunicorns run side by side on the same private Redis, database and clamd,
and take turns. Server latency is gunicorn's own duration_ms from its access log; the client's
round trip is the second figure. Goal: p99 server latency under 50 ms for 1 MB.
"""

import json
import math
import re
import subprocess
import sys
import time

from bench.report import Table
from bench.seed import scanned_pdf, seed_cohort
from bench.stack import ROOT, BenchError, Stack, percentile

CLIENTS = 50
SIZES = (("100 KB", 100_000), ("1 MB", 1_000_000))
# Per run: (seconds, most uploads) in quick and full mode; the count bounds disk use.
QUICK = {"seconds": 4, "cap": {"100 KB": 1000, "1 MB": 500}}
FULL = {"seconds": 20, "cap": {"100 KB": 8000, "1 MB": 3000}}
# Intake allows each student this many uploads a minute; each student is used at most this often.
UPLOADS_PER_STUDENT = 20
WARM_UP = 2 * UPLOADS_PER_STUDENT
ACCESS_LINE = re.compile(r'method=POST path="(?P<path>[^"]+)" status=(?P<status>\d+) '
                         r'.*duration_ms=(?P<ms>\d+)')


def run(quick, database, keep=False):
    plan = QUICK if quick else FULL
    runs = [(variant, label, size) for label, size in SIZES for variant in ("ours", "inline")]
    students_for = {label: math.ceil((plan["cap"][label] + WARM_UP) / UPLOADS_PER_STUDENT)
                    for label, _ in SIZES}
    tables = []
    with Stack("intake", database=database, keep=keep) as stack:
        with stack.app().app_context():
            cohort = seed_cohort(sum(students_for[label] for _, label, _ in runs))
        # No back pressure here: this measures the request, not the queue's limit.
        webs = {
            "ours": (stack.web("wsgi:app", name="web-ours", workers=2,
                               INTAKE_MAX_BACKLOG=10**9),
                     f"/api/v1/assignments/{cohort.assignment_id}/submissions"),
            "inline": (stack.web("bench.inline_app:app", name="web-inline", workers=2,
                                 INTAKE_MAX_BACKLOG=10**9),
                       f"/inline/assignments/{cohort.assignment_id}/submissions"),
        }
        tokens = [student[1] for student in cohort.students]
        results = {}
        for variant, label, size in runs:
            mine, tokens = tokens[:students_for[label]], tokens[students_for[label]:]
            sample = stack.workdir / f"{size}.pdf"
            if not sample.exists():
                sample.write_bytes(scanned_pdf(size))
            web, path = webs[variant]
            print(f"  intake: {variant}, {label}, {CLIENTS} clients …", flush=True)
            results[variant, label] = measure(stack, web, path, sample, mine,
                                              plan["cap"][label], plan["seconds"])
        for label, _ in SIZES:
            tables.append(table(label, results["ours", label], results["inline", label],
                                stack.clamd_socket, database))
    return tables


def measure(stack, web, path, sample, tokens, count, seconds):
    spec = {"port": web.port, "path": path, "tokens": tokens, "file": str(sample),
            "uses_per_token": UPLOADS_PER_STUDENT, "concurrency": CLIENTS}
    load(stack, {**spec, "mode": "closed", "count": WARM_UP, "seconds": 60}, "warm-up")
    offset = web.log_offset()
    outcome = load(stack, {**spec, "mode": "closed", "first_index": WARM_UP, "count": count,
                           "seconds": seconds}, "run")
    time.sleep(0.5)  # gunicorn writes the access line just after the response
    server_ms = [int(m["ms"]) for m in map(ACCESS_LINE.search, web.access_lines(offset))
                 if m and m["path"] == path and m["status"] in ("201", "202")]
    records = outcome["records"]
    accepted = [r for r in records if "answered" in r]
    return {
        "uploads": len(records),
        "accepted": len(accepted),
        "refused": len(records) - len(accepted),
        "statuses": sorted({s for r in records for s in r["statuses"]}),
        "seconds": outcome["seconds"],
        "server_ms": server_ms,
        "client_ms": [r["latency"] * 1000 for r in accepted],
    }


def load(stack, spec, name):
    spec_path = stack.workdir / f"load-{name}.json"
    out_path = stack.workdir / f"load-{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    try:
        subprocess.run([sys.executable, "-m", "bench.uploader", str(spec_path), str(out_path)],
                       cwd=ROOT, check=True, timeout=spec["seconds"] + 180)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"the upload client failed: {exc}") from None
    return json.loads(out_path.read_text())


def table(label, ours, inline, clamd_socket, database):
    result = Table(f"Intake, {label} PDF, {CLIENTS} concurrent clients ({database})",
                   "queued (ours)", "inline baseline")
    result.add("accepted uploads per second", ours["accepted"] / ours["seconds"],
               inline["accepted"] / inline["seconds"], "1/s", better="higher")
    for name, key in (("server", "server_ms"), ("client round trip", "client_ms")):
        for fraction in (0.50, 0.99):
            result.add(f"{name} latency p{int(fraction * 100)}",
                       _float(percentile(ours[key], fraction)),
                       _float(percentile(inline[key], fraction)), "ms")
    result.add("uploads sent", ours["uploads"], inline["uploads"], better=None)
    result.add("uploads not accepted", ours["refused"], inline["refused"], better=None)
    if label == "1 MB":
        p99 = percentile(ours["server_ms"], 0.99)
        verdict = "met" if p99 is not None and p99 < 50 else "NOT met"
        result.note(f"goal: server p99 under 50 ms for 1 MB -> {verdict} ({p99} ms)")
    if ours["refused"] or inline["refused"]:
        result.note(f"statuses seen: ours {ours['statuses']}, inline {inline['statuses']}")
    result.note("server latency: gunicorn access log duration_ms (whole milliseconds); "
                "client: round trip measured by the load process")
    scanner = "clamd" if clamd_socket else "the built-in hash scanner (no clamd installed)"
    result.note(f"inline runs scan ({scanner}), store, similarity, student records (skipped: "
                "not configured), receipt email (outbox) and preview in the request")
    return result


def _float(value):
    return None if value is None else float(value)
