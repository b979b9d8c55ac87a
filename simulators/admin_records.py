"""A student-records system simulator, for tests and local runs:

    python -m simulators.admin_records --port 8791 --secret S
    ADMIN_SYNC_URL=http://127.0.0.1:8791/records ADMIN_SYNC_SECRET=S make run

  POST /records   a JSON submission record, signed in `X-Signature: sha256=<hex HMAC-SHA256 of
                  the raw body>` (else 401) and carrying an Idempotency-Key (else 400). A new
                  key is stored: 201 {"id"}; a key seen before returns the first record: 200.
  GET  /records   the records held, one per Idempotency-Key.
Faults: see simulators/__init__.py.

It also sends what the real system sends us (RecordsSender): signed messages about enrolments,
extensions, students and courses, retried on a 5xx answer or none:

    python -m simulators.admin_records send --url http://127.0.0.1:5000/api/v1/inbound/records \
        --secret S enrolment.added email=carol@example.edu course=DEMO101
"""

import argparse
import hashlib
import hmac
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests

from simulators import Reply, Simulator, command_line


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AdminRecordsSimulator(Simulator):
    def __init__(self, secret="simulator-secret", host="127.0.0.1", port=0):
        super().__init__(host, port)
        self.secret = secret
        self.records = {}  # Idempotency-Key -> stored record

    @property
    def records_url(self):
        return f"{self.url}/records"

    def state(self):
        return {"records": len(self.records)}

    def handle(self, method, path, headers, body):
        if urlsplit(path).path != "/records":
            return Reply(404, {"message": "Not found"})
        if method == "GET":
            return Reply(200, {"records": list(self.records.values())})
        if method != "POST":
            return Reply(405, {"message": "Method not allowed"})
        if not hmac.compare_digest(headers.get("X-Signature", ""), sign(self.secret, body)):
            return Reply(401, {"message": "The signature does not match the body"})
        key = headers.get("Idempotency-Key")
        if not key:
            return Reply(400, {"message": "Idempotency-Key is required"})
        if key in self.records:
            return Reply(200, {"id": self.records[key]["id"]})
        try:
            data = json.loads(body)
        except ValueError:
            return Reply(400, {"message": "The body is not JSON"})
        record = {"id": f"REC-{len(self.records) + 1:05d}", "idempotency_key": key,
                  "received_at": datetime.now(UTC).isoformat(), "record": data}
        self.records[key] = record
        return Reply(201, {"id": record["id"]})


class RecordsSender:
    """The records system's messages to us (POST /api/v1/inbound/records): each signed as the
    records we send it are, with the time it is sent inside the signed body, and sent again,
    newly signed, after a 5xx answer or none, waiting longer each time."""

    def __init__(self, url, secret, attempts=5, backoff=0.5, timeout=10):
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.session = requests.Session()

    @staticmethod
    def message(kind, data, message_id=None, occurred_at=None, sequence=None):
        """A message as the records system makes it: its sequence counts up across senders."""
        return {
            "message_id": message_id or f"rec-{uuid.uuid4().hex}",
            "kind": kind,
            "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
            "sequence": time.time_ns() // 1000 if sequence is None else sequence,
            "data": data,
        }

    def signed(self, message, sent_at=None, secret=None):
        """(body, headers) of the message sent at `sent_at` (now), signed with `secret`."""
        body = json.dumps({**message, "sent_at": (sent_at or datetime.now(UTC)).isoformat()},
                          sort_keys=True).encode()
        return body, {"Content-Type": "application/json",
                      "Idempotency-Key": message["message_id"],
                      "X-Signature": sign(secret or self.secret, body)}

    def post(self, body, headers):
        return self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)

    def send(self, message):
        """The answer that settles it: a 2xx or 4xx (the same again would get the same), or the
        last 5xx; no answer at the last attempt raises."""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.post(*self.signed(message))
            except requests.RequestException:
                if attempt == self.attempts:
                    raise
            else:
                if response.status_code < 500 or attempt == self.attempts:
                    return response
            time.sleep(self.backoff * 2 ** (attempt - 1))

    def close(self):
        self.session.close()


def _value(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def send_command(argv):
    parser = argparse.ArgumentParser(
        prog="python -m simulators.admin_records send",
        description="Send one signed message to Submissions, as the records system would")
    parser.add_argument("--url", required=True,
                        help="e.g. http://127.0.0.1:5000/api/v1/inbound/records")
    parser.add_argument("--secret", required=True, help="ADMIN_SYNC_SECRET of Submissions")
    parser.add_argument("--message-id")
    parser.add_argument("--sequence", type=int)
    parser.add_argument("kind", help="e.g. enrolment.added, extension.granted")
    parser.add_argument("fields", nargs="*", metavar="name=value",
                        help="the message's data; values are read as JSON where they can be")
    args = parser.parse_args(argv)
    data = dict(field.split("=", 1) for field in args.fields)
    sender = RecordsSender(args.url, args.secret)
    message = sender.message(args.kind, {k: _value(v) for k, v in data.items()},
                             message_id=args.message_id, sequence=args.sequence)
    response = sender.send(message)
    print(response.status_code, response.text.strip(), flush=True)
    return 0 if response.ok else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["send"]:
        sys.exit(send_command(argv[1:]))
    parser = command_line("Student-records system simulator")
    parser.add_argument("--secret", default="simulator-secret")
    args = parser.parse_args(argv)
    simulator = AdminRecordsSimulator(secret=args.secret, host=args.host, port=args.port)
    print(f"Student-records simulator at {simulator.records_url}", flush=True)
    simulator.serve_forever()


if __name__ == "__main__":
    main()
