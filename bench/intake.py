"""Intake: 50 concurrent clients upload 100 KB and 1 MB PDFs through the JSON API to gunicorn
(gevent, WEB_CONCURRENCY=2). Ours accepts, records and queues; the baseline,
bench/inline_app.py, does the same intake and then every step in the request. Both gunicorns
run side by side on the same private Redis, database and clamd, and take turns. No worker runs
during the measurement: in production they run on other machines, and here they would take the
same two cores.

Two loads per file size: saturation (each client uploads back to back), which gives accepted
uploads per second; then a steady load at half of our saturation rate, the same rate for both,
which gives the latency a student sees when the server is not simply full (back to back,
latency is only the number of clients over the throughput). Server latency is gunicorn's own
duration_ms from its access log; the client's round trip is the second figure. Goal: p99
server latency under 50 ms for 1 MB.
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
VARIANTS = ("ours", "inline")
# Seconds of saturation and of steady load, and the most uploads in one run (bounds disk use).
QUICK = {"saturation": 4, "steady": 8, "cap": {"100 KB": 1000, "1 MB": 500}}
FULL = {"saturation": 20, "steady": 30, "cap": {"100 KB": 8000, "1 MB": 3000}}
STEADY_FRACTION = 0.5
# Intake allows each student this many uploads a minute; no student is used more often.
UPLOADS_PER_STUDENT = 20
WARM_UP = 10
ACCESS_LINE = re.compile(r'method=POST path="(?P<path>[^"]+)" status=(?P<status>\d+) '
                         r'.*duration_ms=(?P<ms>\d+)')


class Students:
    """Hands out students in blocks, so no two runs share one (or its rate limit)."""

    def __init__(self, tokens):
        self.tokens = tokens

    def take(self, uploads):
        count = math.ceil(uploads / UPLOADS_PER_STUDENT)
        if count > len(self.tokens):
            raise BenchError("the benchmark seeded too few students")
        taken, self.tokens = self.tokens[:count], self.tokens[count:]
        return taken


def run(quick, database, keep=False):
    plan = QUICK if quick else FULL
    runs_per_size = 2 * len(VARIANTS)
    students_needed = sum(runs_per_size * math.ceil((plan["cap"][label] + WARM_UP)
                                                    / UPLOADS_PER_STUDENT)
                          for label, _ in SIZES)
    tables = []
    with Stack("intake", database=database, keep=keep) as stack:
        with stack.app().app_context():
            cohort = seed_cohort(students_needed)
        students = Students([student[1] for student in cohort.students])
        # No back pressure here: this measures the request, not the queue's limit.
        webs = {
            "ours": (stack.web("wsgi:app", name="web-ours", INTAKE_MAX_BACKLOG=10**9),
                     f"/api/v1/assignments/{cohort.assignment_id}/submissions"),
            "inline": (stack.web("bench.inline_app:app", name="web-inline",
                                 INTAKE_MAX_BACKLOG=10**9),
                       f"/inline/assignments/{cohort.assignment_id}/submissions"),
        }
        sample = stack.workdir / "warm-up.pdf"
        sample.write_bytes(scanned_pdf(100_000))
        for web, path in webs.values():
            load(stack, {"port": web.port, "path": path, "file": str(sample),
                         "tokens": students.take(WARM_UP),
                         "uses_per_token": UPLOADS_PER_STUDENT, "mode": "closed",
                         "concurrency": 5, "count": WARM_UP, "seconds": 300}, "warm-up")
        for label, size in SIZES:
            sample = stack.workdir / f"{size}.pdf"
            sample.write_bytes(scanned_pdf(size))
            cap = plan["cap"][label]
            saturation, steady = {}, {}
            for variant in VARIANTS:
                print(f"  intake: {label}, {variant}, saturation …", flush=True)
                saturation[variant] = measure(stack, *webs[variant], sample, students.take(cap),
                                              count=cap, seconds=plan["saturation"])
            ours = saturation["ours"]
            rate = max(1.0, STEADY_FRACTION * ours["accepted"] / ours["seconds"])
            count = min(cap, math.ceil(rate * plan["steady"]))
            for variant in VARIANTS:
                print(f"  intake: {label}, {variant}, steady {rate:.1f}/s …", flush=True)
                steady[variant] = measure(stack, *webs[variant], sample, students.take(count),
                                          count=count, seconds=plan["steady"], rate=rate)
            tables.append(table(label, saturation, steady, rate, stack.clamd_socket, database))
    return tables


def measure(stack, web, path, sample, tokens, count, seconds, rate=None):
    offset = web.log_offset()
    outcome = load(stack, {
        "port": web.port, "path": path, "tokens": tokens, "file": str(sample),
        "uses_per_token": UPLOADS_PER_STUDENT, "mode": "closed", "concurrency": CLIENTS,
        "count": count, "seconds": seconds, "rate": rate,
    }, "run")
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
                       cwd=ROOT, check=True, timeout=spec["seconds"] + 300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"the upload client failed: {exc}") from None
    return json.loads(out_path.read_text())


def table(label, saturation, steady, rate, clamd_socket, database):
    result = Table(f"Intake, {label} PDF, {CLIENTS} concurrent clients ({database})",
                   "queued (ours)", "inline baseline")
    ours, inline = saturation["ours"], saturation["inline"]
    result.add("saturation: accepted uploads per second", ours["accepted"] / ours["seconds"],
               inline["accepted"] / inline["seconds"], "1/s", better="higher")
    result.add("saturation: server latency p50", _ms(ours["server_ms"], 0.5),
               _ms(inline["server_ms"], 0.5), "ms")
    ours, inline = steady["ours"], steady["inline"]
    for name, key in (("server", "server_ms"), ("client round trip", "client_ms")):
        for fraction in (0.50, 0.99):
            result.add(f"at {rate:.1f}/s: {name} latency p{int(fraction * 100)}",
                       _ms(ours[key], fraction), _ms(inline[key], fraction), "ms")
    result.add("uploads sent (saturation + steady)",
               saturation["ours"]["uploads"] + ours["uploads"],
               saturation["inline"]["uploads"] + inline["uploads"], better=None)
    result.add("uploads not accepted", saturation["ours"]["refused"] + ours["refused"],
               saturation["inline"]["refused"] + inline["refused"], better=None)
    if label == "1 MB":
        p99 = _ms(ours["server_ms"], 0.99)
        verdict = "met" if p99 is not None and p99 < 50 else "NOT met"
        result.note(f"goal: server p99 under 50 ms for 1 MB -> {verdict} ({p99:.0f} ms at "
                    f"{rate:.1f}/s)")
    statuses = {variant: sorted(set(saturation[variant]["statuses"])
                                | set(steady[variant]["statuses"])) for variant in VARIANTS}
    if any(status not in (201, 202) for found in statuses.values() for status in found):
        result.note(f"statuses seen: ours {statuses['ours']}, inline {statuses['inline']}")
    result.note(f"steady load: {CLIENTS} clients on a fixed schedule, {rate:.1f} uploads/s in "
                f"all ({STEADY_FRACTION:.0%} of our saturation rate), the same for both")
    result.note("server latency: gunicorn access log duration_ms (whole milliseconds); "
                "client: round trip measured by the load process")
    scanner = "clamd" if clamd_socket else "the built-in hash scanner (no clamd installed)"
    result.note(f"inline runs scan ({scanner}), store, similarity (skipped: a scan has no "
                "text), student records (skipped: not configured), receipt email (outbox) and "
                "preview in the request")
    return result


def _ms(values, fraction):
    value = percentile(values, fraction)
    return None if value is None else float(value)
