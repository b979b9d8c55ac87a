"""A Turnitin Core API (TCA) simulator, for tests and local runs:

    python -m simulators.turnitin --port 8790 [--api-key KEY] [--report-seconds 20]
    TURNITIN_URL=http://127.0.0.1:8790 TURNITIN_API_KEY=KEY make run

It speaks the TCA endpoints our client uses, with TCA's statuses:
  POST /api/v1/submissions                  201 {id, owner, title, status: CREATED, created_time}
  GET  /api/v1/submissions/{id}             200 {..., status: CREATED|PROCESSING|COMPLETE|ERROR,
                                                 error_code when ERROR}
  PUT  /api/v1/submissions/{id}/original    202; the raw file, named by Content-Disposition
  PUT  /api/v1/submissions/{id}/similarity  202; 409 until the submission is COMPLETE
  GET  /api/v1/submissions/{id}/similarity  200 {status: PROCESSING|COMPLETE,
                                                 overall_match_percentage, top_matches, ...};
                                            404 if no report was requested
Every call needs `Authorization: Bearer <key>` (else 401) and the X-Turnitin-Integration-Name
and X-Turnitin-Integration-Version headers (else 400). Faults: see simulators/__init__.py.

Scores are computed, not invented: the file's text is compared five words at a time with the
sources the simulator was given (as internet pages) and with earlier indexed submissions.
"""

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import Message
from urllib.parse import unquote, urlsplit

from simulators import Reply, Simulator, command_line

SHINGLE_WORDS = 5
MIN_WORDS = 20
TOP_MATCHES = 5

ID = r"(?P<id>[0-9a-f-]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/v1/submissions$"), "create"),
    ("GET", re.compile(rf"^/api/v1/submissions/{ID}$"), "show"),
    ("PUT", re.compile(rf"^/api/v1/submissions/{ID}/original$"), "upload"),
    ("PUT", re.compile(rf"^/api/v1/submissions/{ID}/similarity$"), "request_report"),
    ("GET", re.compile(rf"^/api/v1/submissions/{ID}/similarity$"), "report"),
]


def now_iso(later=0.0):
    when = datetime.now(UTC) + timedelta(seconds=later)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def shingles(text):
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def extract_text(content):
    """(text, error_code) as TCA would report them for an uploaded file."""
    if content.startswith(b"%PDF-"):
        text = _pdf_text(content)
    elif b"\x00" in content:
        return "", "CANNOT_EXTRACT_TEXT"
    else:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return "", "CANNOT_EXTRACT_TEXT"
    if not text.strip():
        return "", "CANNOT_EXTRACT_TEXT"
    if len(re.findall(r"\w+", text)) < MIN_WORDS:
        return text, "TOO_LITTLE_TEXT"
    return text, None


def _pdf_text(content):
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(content)
    except pypdfium2.PdfiumError:
        return ""
    try:
        return "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()


class TurnitinSimulator(Simulator):
    def __init__(self, api_key="simulator-key", processing_seconds=0.0, report_seconds=0.0,
                 sources=None, host="127.0.0.1", port=0):
        super().__init__(host, port)
        self.api_key = api_key
        self.processing_seconds = processing_seconds
        self.report_seconds = report_seconds
        self.sources = {name: shingles(text) for name, text in (sources or {}).items()}
        self.submissions = {}
        self.index = []  # (name, owner, shingles) of submissions added to the index

    def add_source(self, name, text):
        with self.lock:
            self.sources[name] = shingles(text)

    def state(self):
        return {"submissions": {sid: self.status_of(sub) for sid, sub in self.submissions.items()}}

    def status_of(self, submission):
        if submission["uploaded_at"] is None:
            return "CREATED"
        if time.monotonic() < submission["uploaded_at"] + self.processing_seconds:
            return "PROCESSING"
        return "ERROR" if submission["error_code"] else "COMPLETE"

    def handle(self, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"message": "Unauthorized"})
        if not (headers.get("X-Turnitin-Integration-Name")
                and headers.get("X-Turnitin-Integration-Version")):
            return Reply(400, {"message": "X-Turnitin-Integration-Name and "
                                          "X-Turnitin-Integration-Version are required"})
        path = urlsplit(path).path
        for route_method, pattern, action in ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                if action == "create":
                    return self.create(body)
                submission = self.submissions.get(match["id"])
                if submission is None:
                    return Reply(404, {"message": f"Submission {match['id']} not found"})
                return getattr(self, action)(submission, headers, body)
        return Reply(404, {"message": "Not found"})

    def create(self, body):
        try:
            request = _json(body)
            owner, title = request["owner"], request["title"]
        except (KeyError, TypeError, ValueError):
            return Reply(400, {"message": "owner and title are required"})
        submission = {
            "id": str(uuid.uuid4()), "owner": owner, "title": title,
            "created_time": now_iso(), "uploaded_at": None, "text": "", "error_code": None,
            "report": None,
        }
        self.submissions[submission["id"]] = submission
        return Reply(201, self._public(submission))

    def show(self, submission, headers, body):
        return Reply(200, self._public(submission))

    def upload(self, submission, headers, body):
        if submission["uploaded_at"] is not None:
            return Reply(409, {"message": "A file was already uploaded to this submission"})
        disposition = Message()
        disposition["Content-Disposition"] = headers.get("Content-Disposition", "")
        filename = disposition.get_param("filename", header="Content-Disposition")
        if not filename:
            return Reply(400, {"message": "Content-Disposition must name the file"})
        submission["filename"] = unquote(filename)
        submission["text"], submission["error_code"] = extract_text(body)
        submission["uploaded_at"] = time.monotonic()
        return Reply(202, {"message": f"Successfully uploaded file for Submission ID "
                                      f"{submission['id']}"})

    def request_report(self, submission, headers, body):
        if self.status_of(submission) != "COMPLETE":
            return Reply(409, {"message": "The submission has not been processed"})
        if submission["report"] is None:
            try:
                settings = _json(body)
            except ValueError:
                return Reply(400, {"message": "settings must be JSON"})
            generation = settings.get("generation_settings") or {}
            exclude_own = generation.get("auto_exclude_self_matching_scope") == "ALL"
            submission["report"] = {
                "requested_at": time.monotonic(),
                "time_requested": now_iso(),
                "time_generated": now_iso(self.report_seconds),
                **self._compare(submission, exclude_own),
            }
            if (settings.get("indexing_settings") or {}).get("add_to_index"):
                self.index.append((f"Submitted work: {submission['title']}",
                                   submission["owner"], shingles(submission["text"])))
        return Reply(202, {"message": "Similarity report requested"})

    def report(self, submission, headers, body):
        report = submission["report"]
        if report is None:
            return Reply(404, {"message": "No similarity report was requested"})
        answer = {"submission_id": submission["id"], "time_requested": report["time_requested"]}
        if time.monotonic() < report["requested_at"] + self.report_seconds:
            return Reply(200, {**answer, "status": "PROCESSING"})
        scores = {k: v for k, v in report.items() if k not in ("requested_at", "time_requested")}
        return Reply(200, {**answer, "status": "COMPLETE", **scores})

    def _compare(self, submission, exclude_own):
        mine = shingles(submission["text"])
        candidates = [(name, "INTERNET", theirs) for name, theirs in self.sources.items()]
        candidates += [(name, "SUBMITTED_WORK", theirs) for name, owner, theirs in self.index
                       if not (exclude_own and owner == submission["owner"])]
        found = {"INTERNET": set(), "SUBMITTED_WORK": set()}
        matches = []
        for name, source_type, theirs in candidates:
            shared = mine & theirs
            if shared:
                found[source_type] |= shared
                matches.append({"name": name, "source_type": source_type,
                                "percentage": round(100 * len(shared) / len(mine), 1)})
        matches.sort(key=lambda match: match["percentage"], reverse=True)

        def percent(part):
            return round(100 * len(part) / len(mine)) if mine else 0

        return {
            "overall_match_percentage": percent(found["INTERNET"] | found["SUBMITTED_WORK"]),
            "internet_match_percentage": percent(found["INTERNET"]),
            "publication_match_percentage": 0,
            "submitted_works_match_percentage": percent(found["SUBMITTED_WORK"]),
            "top_matches": matches[:TOP_MATCHES],
        }

    def _public(self, submission):
        status = self.status_of(submission)
        shown = {key: submission[key] for key in ("id", "owner", "title", "created_time")}
        shown["status"] = status
        if status == "ERROR":
            shown["error_code"] = submission["error_code"]
        return shown


def _json(body):
    value = json.loads(body or b"{}")
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def main(argv=None):
    parser = command_line("Turnitin Core API simulator")
    parser.add_argument("--api-key", default="simulator-key")
    parser.add_argument("--processing-seconds", type=float, default=2.0,
                        help="how long reading an uploaded file takes")
    parser.add_argument("--report-seconds", type=float, default=10.0,
                        help="how long a similarity report takes")
    args = parser.parse_args(argv)
    simulator = TurnitinSimulator(api_key=args.api_key, processing_seconds=args.processing_seconds,
                                  report_seconds=args.report_seconds, host=args.host,
                                  port=args.port)
    print(f"Turnitin simulator at {simulator.url} (API key {args.api_key})", flush=True)
    simulator.serve_forever()


if __name__ == "__main__":
    main()
