"""Live fan-out: N open event streams held by ONE gunicorn gevent worker (WEB_CONCURRENCY=1),
ours (/events, one Redis pub/sub connection per process, app/events/hub.py) against stock
flask-sse (bench/stock_sse_app.py, one Redis connection per stream), on the same Redis, one
after the other. Every stream is a student following `assignment.<id>` and `user.<id>`, with
a bearer token (stock flask-sse has no authorization: its streams follow one channel). With all
streams open: the web process's RSS and Redis's CLIENT LIST; then a handful of broadcast
events, each carrying its publish time, and the publish-to-receipt time on every stream. Ours
publishes the real way (an Event row committed, then published); the stamp is taken before the
commit, so our figure includes writing the event to the database.
"""

import json
import selectors
import subprocess
import sys
import time

import redis
from flask import Flask
from flask_sse import sse

from bench.report import Table
from bench.seed import seed_cohort
from bench.stack import ROOT, BenchError, Stack, percentile, rss_kib

QUICK = {"streams": (500,), "events": 5}
FULL = {"streams": (1000, 5000), "events": 10}
CLIENT_PROCESSES = 2
CONNECT_AT_ONCE = 100
EVENT_GAP_SECONDS = 0.5
SETTLE_SECONDS = 1.0
# After the last publish, how long the clients may take to receive every event.
DELIVERY_SECONDS = 30


def run(quick, database, keep=False):
    plan = QUICK if quick else FULL
    tables = []
    with Stack("fanout", database=database, clamd=False, keep=keep) as stack:
        app = stack.app()
        for streams in plan["streams"]:
            with app.app_context():
                cohort = seed_cohort(streams)
            results = {}
            for variant in ("ours", "stock"):
                print(f"  fan-out: {variant}, {streams} streams …", flush=True)
                results[variant] = measure(stack, app, cohort, variant, plan["events"])
            tables.append(table(results, streams, plan["events"], database))
    return tables


def stream_requests(cohort, variant):
    if variant == "stock":
        return [{"path": f"/stream?channel=assignment.{cohort.assignment_id}", "headers": {}}
                for _ in cohort.students]
    return [{"path": f"/events?topic=assignment.{cohort.assignment_id}&topic=user.{user_id}",
             "headers": {"Authorization": f"Bearer {token}"}}
            for user_id, token, _ in cohort.students]


def measure(stack, app, cohort, variant, events):
    wsgi = "wsgi:app" if variant == "ours" else "bench.stock_sse_app:app"
    streams_wanted = len(cohort.students)
    web = stack.web(wsgi, name=f"web-{variant}", workers=1, connections=streams_wanted + 1000)
    try:
        (worker_pid,) = web.worker_pids()
        requests_ = stream_requests(cohort, variant)
        # One stream opened and closed first: the hub (ours) starts with the first stream.
        open_streams(stack, web, requests_[:1], f"{variant}-warm", 1).stop()
        time.sleep(SETTLE_SECONDS)
        monitor = redis.Redis.from_url(stack.redis_url)
        rss_before = rss_kib(worker_pid)
        clients_before = len(monitor.client_list()) - 1
        subscribed_before = subscribers(monitor, cohort)
        opening = time.monotonic()
        streams = open_streams(stack, web, requests_, variant, CLIENT_PROCESSES, events)
        try:
            opened, failed = streams.wait_ready(timeout=streams_wanted / 5 + 120)
            if variant == "stock":
                wait_subscribed(monitor, cohort, subscribed_before + opened)
            opened_in = time.monotonic() - opening
            time.sleep(SETTLE_SECONDS)
            rss_after = rss_kib(worker_pid)
            clients_during = len(monitor.client_list()) - 1
            for seq in range(events):
                publish(stack, app, cohort, variant, seq)
                time.sleep(EVENT_GAP_SECONDS)
        finally:
            outcome = streams.stop(DELIVERY_SECONDS)
        monitor.close()
    finally:
        stack.stop(web.process)
    latencies = [value for values in outcome["received"].values() for value in values]
    return {
        "opened": opened, "failed": failed, "opened_in": opened_in, "ended": outcome["ended"],
        "failures": outcome["failures"],
        "rss_before": rss_before, "rss_after": rss_after,
        "redis_before": clients_before, "redis_during": clients_during,
        "latencies": latencies,
        "delivered": len(latencies),
        "expected": opened * events,
    }


def subscribers(monitor, cohort):
    return monitor.pubsub_numsub(f"assignment.{cohort.assignment_id}")[0][1]


def wait_subscribed(monitor, cohort, count, seconds=120):
    """Stock streams have no first byte to wait for; Redis knows when each has subscribed."""
    deadline = time.monotonic() + seconds
    while subscribers(monitor, cohort) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"only {subscribers(monitor, cohort)} of {count} stock streams "
                             "subscribed")
        time.sleep(0.1)


def publish(stack, app, cohort, variant, seq):
    payload = {"message": f"Benchmark notice {seq}", "seq": seq}
    topic = f"assignment.{cohort.assignment_id}"
    if variant == "stock":
        # flask-sse's own publish, configured as bench/stock_sse_app.py is.
        stock = Flask("stock-publisher")
        stock.config["REDIS_URL"] = stack.redis_url
        with stock.app_context():
            payload["sent_at"] = time.time()
            sse.publish(payload, type="flash", channel=topic)
        return
    from app.events.publisher import emit
    from app.extensions import db

    with app.app_context():
        payload["sent_at"] = time.time()
        emit("flash", payload, [topic])
        db.session.commit()


class StreamClients:
    def __init__(self, processes):
        self.processes = processes

    def wait_ready(self, timeout):
        opened = failed = 0
        deadline = time.monotonic() + timeout
        for process, _ in self.processes:
            line = _read_line(process, deadline)
            if not line.startswith("ready"):
                raise BenchError(f"stream client did not get ready: {line!r}")
            _, ok, bad = line.split()
            opened, failed = opened + int(ok), failed + int(bad)
        return opened, failed

    def stop(self, wait=0):
        """Let the clients finish by themselves (every event received) for `wait` seconds,
        then tell them to stop; returns what they received."""
        merged = {"received": {}, "failures": [], "ended": 0}
        deadline = time.monotonic() + wait
        for process, out in self.processes:
            try:
                process.wait(max(0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    process.stdin.write("stop\n")
                    process.stdin.flush()
                except BrokenPipeError:
                    pass
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if not out.exists():
                continue
            result = json.loads(out.read_text())
            merged["failures"] += result["failures"]
            merged["ended"] += result["ended"]
            for seq, values in result["received"].items():
                merged["received"].setdefault(seq, []).extend(values)
        return merged


def _read_line(process, deadline):
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.1, deadline - time.monotonic())):
            raise BenchError("stream clients did not open their streams in time")
    return process.stdout.readline().strip()


def open_streams(stack, web, requests_, name, processes, events=0):
    started = []
    share = -(-len(requests_) // processes)
    for index in range(processes):
        mine = requests_[index * share:(index + 1) * share]
        if not mine:
            continue
        spec = stack.workdir / f"streams-{name}-{index}.json"
        out = stack.workdir / f"streams-{name}-{index}.out.json"
        spec.write_text(json.dumps({"port": web.port, "streams": mine,
                                    "headers_first": not name.startswith("stock"),
                                    "events": events,
                                    "connect_at_once": CONNECT_AT_ONCE, "max_seconds": 600}))
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.streams", str(spec), str(out)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append((process, out))
    clients = StreamClients(started)
    if name.endswith("warm"):
        clients.wait_ready(timeout=60)
    return clients


def table(results, streams, events, database):
    ours, stock = results["ours"], results["stock"]
    result = Table(f"Live fan-out, {streams:,} streams on one gunicorn gevent worker "
                   f"({database})", "ours (hub)", "stock flask-sse")
    result.add("streams open", ours["opened"], stock["opened"], better=None)
    result.add("streams refused or failed", ours["failed"], stock["failed"], better=None)
    result.add("streams the server ended early", ours["ended"], stock["ended"], better=None)
    result.add("time to open every stream", ours["opened_in"], stock["opened_in"], "s")
    result.add("web process memory per stream",
               _per_stream(ours), _per_stream(stock), "KiB")
    result.add("web process RSS with streams open", ours["rss_after"] / 1024,
               stock["rss_after"] / 1024, "MiB")
    result.add("Redis connections while streaming", ours["redis_during"],
               stock["redis_during"])
    for fraction in (0.50, 0.99):
        result.add(f"publish to receipt p{int(fraction * 100)}",
                   _ms(percentile(ours["latencies"], fraction)),
                   _ms(percentile(stock["latencies"], fraction)), "ms")
    result.add("publish to receipt max", _ms(max(ours["latencies"], default=None)),
               _ms(max(stock["latencies"], default=None)), "ms")
    result.add("events delivered", ours["delivered"], stock["delivered"], better=None)
    result.add("events expected", ours["expected"], stock["expected"], better=None)
    for name, figures in (("ours", ours), ("stock", stock)):
        if figures["failures"]:
            result.note(f"{name} failures (first): {figures['failures'][:3]}")
    result.note(f"{events} broadcast events {EVENT_GAP_SECONDS} s apart; latency is "
                "over every (stream, event) pair; clients in "
                f"{CLIENT_PROCESSES} separate processes stamp receipt when a chunk is read; "
                f"an event not received {DELIVERY_SECONDS} s after the last publish counts as "
                "not delivered")
    result.note(f"Redis connections: CLIENT LIST while streaming, less the benchmark's own; "
                f"before any stream: ours {ours['redis_before']}, stock {stock['redis_before']}")
    return result


def _per_stream(figures):
    if not figures["opened"]:
        return None
    return (figures["rss_after"] - figures["rss_before"]) / figures["opened"]


def _ms(seconds):
    return None if seconds is None else seconds * 1000
