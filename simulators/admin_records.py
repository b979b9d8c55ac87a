"""A student-records system simulator, for tests and local runs:

    python -m simulators.admin_records --port 8791 --secret S
    ADMIN_SYNC_URL=http://127.0.0.1:8791/records ADMIN_SYNC_SECRET=S make run

  POST /records   a JSON submission record, signed in `X-Signature: sha256=<hex HMAC-SHA256 of
                  the raw body>` (else 401) and carrying an Idempotency-Key (else 400). A new
                  key is stored: 201 {"id"}; a key seen before returns the first record: 200.
  GET  /records   the records held, one per Idempotency-Key.
Faults: see simulators/__init__.py.
"""

import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import urlsplit

from simulators import Reply, Simulator, command_line


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
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Signature", ""), expected):
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


def main(argv=None):
    parser = command_line("Student-records system simulator")
    parser.add_argument("--secret", default="simulator-secret")
    args = parser.parse_args(argv)
    simulator = AdminRecordsSimulator(secret=args.secret, host=args.host, port=args.port)
    print(f"Student-records simulator at {simulator.records_url}", flush=True)
    simulator.serve_forever()


if __name__ == "__main__":
    main()
