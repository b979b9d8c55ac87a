"""The upload load generator, run as its own process: `python -m bench.uploader SPEC OUT`.

SPEC (JSON) names the server, the students' tokens (upload i is by token i // uses_per_token,
so no student goes past intake's rate limit), the file and the pattern:
- "closed": `concurrency` clients upload until `count` uploads (numbered from `first_index`)
  or `seconds` pass; back to back, or, given `rate` (uploads a second in all), each client
  uploads on a fixed schedule of one upload every `concurrency / rate` seconds;
- "open": `count` uploads arrive evenly over `seconds` (a deadline spike), each retried with
  the same Idempotency-Key after a 503 or 429 the way the upload page does it.
Every upload carries a unique tail, so no two files share a SHA-256. OUT gets one record per
upload: started and answered times (seconds since the run began), attempts, statuses, the
submission id, and the latency of the answered attempt.
"""

import http.client
import json
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BOUNDARY = "benchboundary7f3a9c"
MAX_ATTEMPTS = 8
REQUEST_TIMEOUT = 120


class Client:
    def __init__(self, spec):
        self.port = spec["port"]
        self.path = spec["path"]
        self.tokens = spec["tokens"]
        self.uses_per_token = spec.get("uses_per_token", 1)
        data = Path(spec["file"]).read_bytes()
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"essay.pdf\"\r\nContent-Type: application/pdf\r\n\r\n").encode()
        self.body_head = head + data
        self.body_tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.local = threading.local()

    def body(self, index):
        # After %%EOF, where PDF readers ignore it: every upload is a different file.
        return self.body_head + f"%upload {index} {uuid.uuid4().hex}\n".encode() + self.body_tail

    def token(self, index):
        return self.tokens[(index // self.uses_per_token) % len(self.tokens)]

    def connection(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.local.conn = conn
        return conn

    def send(self, body, headers):
        conn = self.connection()
        reused = getattr(conn, "used", False)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            if not reused:
                raise
            # The server closed the idle keep-alive connection; as browsers do, send it again
            # (the same Idempotency-Key makes a repeat harmless).
            conn.close()
            self.local.conn = None
            conn = self.connection()
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
        conn.used = True
        return response, response.read()

    def post(self, index, key):
        """One attempt: (status, retry-after seconds, submission id, seconds taken)."""
        headers = {"Authorization": f"Bearer {self.token(index)}",
                   "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                   "Idempotency-Key": key}
        body = self.body(index)
        started = time.perf_counter()
        try:
            response, raw = self.send(body, headers)
        except (OSError, http.client.HTTPException):
            self.local.conn = None
            return 0, None, None, time.perf_counter() - started
        took = time.perf_counter() - started
        if response.getheader("Connection", "").lower() == "close":
            self.local.conn.close()
            self.local.conn = None
        submission_id = None
        if response.status in (201, 202):
            submission_id = json.loads(raw)["id"]
        retry_after = response.getheader("Retry-After")
        return response.status, float(retry_after) if retry_after else None, submission_id, took


def retry_delay(retry_after, attempt):
    # As app/static/upload.js: exponential backoff with jitter, never before Retry-After.
    backoff = min(30.0, 2.0 ** attempt) * (0.5 + random.random())
    return max(retry_after, backoff / 2) if retry_after else backoff


def upload(client, index, began, retry):
    key = uuid.uuid4().hex
    record = {"index": index, "started": time.perf_counter() - began, "statuses": []}
    for attempt in range(MAX_ATTEMPTS if retry else 1):
        status, retry_after, submission_id, took = client.post(index, key)
        record["statuses"].append(status)
        if status in (201, 202):
            record.update(answered=time.perf_counter() - began, latency=took,
                          submission_id=submission_id)
            break
        if not retry or status not in (0, 429, 503):
            break
        time.sleep(retry_delay(retry_after, attempt))
    return record


def closed_loop(client, spec, began):
    records, lock = [], threading.Lock()
    first = spec.get("first_index", 0)
    counter = iter(range(first, first + spec["count"]))
    deadline = began + spec["seconds"]
    rate = spec.get("rate")
    period = spec["concurrency"] / rate if rate else 0

    def run(client_number):
        next_start = began + (client_number / rate if rate else 0)
        while True:
            if rate:
                if next_start >= deadline:
                    return
                time.sleep(max(0.0, next_start - time.perf_counter()))
                next_start += period
            if time.perf_counter() >= deadline:
                return
            with lock:
                index = next(counter, None)
            if index is None:
                return
            record = upload(client, index, began, retry=False)
            with lock:
                records.append(record)

    threads = [threading.Thread(target=run, args=(number,))
               for number in range(spec["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def open_loop(client, spec, began):
    gap = spec["seconds"] / spec["count"]
    with ThreadPoolExecutor(max_workers=spec["concurrency"]) as pool:
        futures = []
        for index in range(spec["count"]):
            wait = began + index * gap - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            futures.append(pool.submit(upload, client, index, began, True))
        return [future.result() for future in futures]


def main(spec_path, out_path):
    spec = json.loads(Path(spec_path).read_text())
    client = Client(spec)
    began = time.perf_counter()
    wall_began = time.time()
    run = closed_loop if spec["mode"] == "closed" else open_loop
    records = run(client, spec, began)
    Path(out_path).write_text(json.dumps({
        "wall_began": wall_began, "seconds": time.perf_counter() - began, "records": records,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:3])
