"""Turnitin Core API (TCA): create a submission, upload the original file, request a
similarity report, then poll for it.

No callback can reach us, so we poll. One job polls for a bounded time (TURNITIN_POLL_SECONDS,
about as long as a typical report takes) and, if the report is not ready by then, gives the
worker back and asks to be run again in TURNITIN_RECHECK_SECONDS: a slow report never holds a
worker for minutes, and a quick one finishes in a single run.

Every stage is recorded in an ExternalRecord (service "turnitin") before the next starts, the
remote submission id before the file is uploaded, so a re-run after a crash resumes the same
Turnitin submission instead of creating a second one.

The one gap is the create itself: TCA creates are not idempotent and submissions cannot be
listed, so a create whose answer never reached us (a timeout, a worker killed mid-call) leaves
an empty submission at Turnitin that we cannot find. Each try is recorded before it is sent;
a run that finds an earlier try unanswered counts it in the record's data ("unconfirmed_creates")
and logs event=turnitin_create_unconfirmed, so what Turnitin holds can be squared with ours.
"""

import logging
import time
from pathlib import Path
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from app.extensions import db
from app.models import ExternalRecord
from app.services.circuit import (
    CircuitBreaker,
    CircuitOpen,
    answer_message,
    refusal,
    refused_for_good,
    retry_after_seconds,
)
from app.steps import Refused, RetryLater, StepSkipped

log = logging.getLogger(__name__)

SERVICE = "turnitin"
INTEGRATION_NAME = "Submissions"
INTEGRATION_VERSION = "1.0"

# The file types TCA reads; anything else would only come back as an error after the upload.
READABLE_TYPES = {
    "pdf", "doc", "docx", "odt", "rtf", "txt", "htm", "html", "ppt", "pptx", "pps", "ppsx",
    "xls", "xlsx", "ps", "wpd", "hwp", "hwpx",
}

REPORT_SETTINGS = {
    "indexing_settings": {"add_to_index": True},
    "generation_settings": {
        "search_repositories": ["INTERNET", "SUBMITTED_WORK", "PUBLICATION"],
        # A student's own earlier attempts are not plagiarism.
        "auto_exclude_self_matching_scope": "ALL",
    },
    "view_settings": {"exclude_quotes": True, "exclude_bibliography": True},
}

UNREADABLE = {
    "UNSUPPORTED_FILETYPE": "Turnitin cannot read this file type",
    "CANNOT_EXTRACT_TEXT": "Turnitin could not read any text from this file",
    "TOO_LITTLE_TEXT": "the file has too little text for Turnitin to compare",
    "TOO_MUCH_TEXT": "the file has more text than Turnitin accepts",
    "TOO_MANY_PAGES": "the file has more pages than Turnitin accepts",
    "FILE_LOCKED": "the file is password-protected",
    "CORRUPT_FILE": "Turnitin found the file damaged",
}

TOP_MATCHES = 3

UNCONFIRMED = "unconfirmed_creates"


class TurnitinError(Exception):
    """Turnitin did not do what we asked; the step is retried with backoff. `answer_lost`: the
    request may have reached Turnitin and been acted on, but no answer came back."""

    def __init__(self, message, answer_lost=False):
        super().__init__(message)
        self.answer_lost = answer_lost


def _may_have_arrived(exc):
    """Whether a request that got no answer may still have reached Turnitin: not when the
    connection was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and exc.args:
        return not isinstance(getattr(exc.args[0], "reason", None), NewConnectionError)
    return True


class TurnitinClient:
    def __init__(self, base_url, api_key, circuit, timeout):
        self.api_url = base_url.rstrip("/") + "/api/v1"
        self.circuit = circuit
        self.timeout = timeout
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "X-Turnitin-Integration-Name": INTEGRATION_NAME,
            "X-Turnitin-Integration-Version": INTEGRATION_VERSION,
        }

    def create_submission(self, metadata):
        return self._call("POST", "/submissions", (201,), json=metadata)

    def get_submission(self, remote_id):
        return self._call("GET", f"/submissions/{remote_id}", (200, 404))

    def upload_original(self, remote_id, path, filename):
        headers = {
            "Content-Type": "binary/octet-stream",
            "Content-Disposition": f'inline; filename="{quote(filename, safe=" ")}"',
        }
        with open(path, "rb") as original:
            return self._call("PUT", f"/submissions/{remote_id}/original", (202,),
                              data=original, headers=headers)

    def request_similarity(self, remote_id, settings):
        return self._call("PUT", f"/submissions/{remote_id}/similarity", (202,), json=settings)

    def get_similarity(self, remote_id):
        return self._call("GET", f"/submissions/{remote_id}/similarity", (200, 404))

    def _call(self, method, path, expected, headers=None, **kwargs):
        """The answer's JSON, or None for an expected 404."""
        try:
            self.circuit.before_call()
        except CircuitOpen as exc:
            raise RetryLater("Turnitin is unavailable, so it is not being called for now",
                             exc.retry_in) from None
        try:
            response = requests.request(method, self.api_url + path, timeout=self.timeout,
                                        headers={**self.headers, **(headers or {})}, **kwargs)
        except requests.RequestException as exc:
            self.circuit.record_failure()
            raise TurnitinError(f"{method} {path}: no answer ({type(exc).__name__})",
                                answer_lost=_may_have_arrived(exc)) from exc
        if response.status_code >= 500:
            self.circuit.record_failure()
            raise TurnitinError(f"{method} {path}: Turnitin answered {response.status_code}")
        self.circuit.record_success()
        if response.status_code == 429:
            raise RetryLater("Turnitin asked us to slow down",
                             retry_after_seconds(response.headers.get("Retry-After"), 60))
        if response.status_code not in expected and refused_for_good(response.status_code):
            raise Refused(refusal("Turnitin", response), "Turnitin refused the request")
        if response.status_code not in expected:
            raise TurnitinError(f"{method} {path}: Turnitin answered {response.status_code}: "
                                f"{answer_message(response)}")
        if response.status_code == 404:
            return None
        return response.json() if response.content else {}


def client_for(config, redis):
    circuit = CircuitBreaker(
        redis, SERVICE,
        threshold=config["TURNITIN_CIRCUIT_FAILURES"],
        cooldown=config["TURNITIN_CIRCUIT_COOLDOWN"],
    )
    return TurnitinClient(config["TURNITIN_URL"], config["TURNITIN_API_KEY"] or "", circuit,
                          timeout=config["TURNITIN_TIMEOUT"])


class Wait:
    """Polls until a deadline, then hands the worker back with a request to run again later."""

    def __init__(self, seconds, interval, recheck):
        self.deadline = time.monotonic() + seconds
        self.interval = interval
        self.recheck = recheck

    def until(self, fetch, ready, still_waiting):
        while True:
            value = fetch()
            if ready(value):
                return value
            if time.monotonic() + self.interval > self.deadline:
                raise RetryLater(still_waiting, self.recheck)
            time.sleep(self.interval)


def submission_metadata(submission):
    student = submission.student
    assignment = submission.assignment
    owner = f"student-{student.id}"
    given_name, _, family_name = (student.name or "").partition(" ")
    return {
        "owner": owner,
        "submitter": owner,
        "title": submission.filename,
        "owner_default_permission_set": "LEARNER",
        "submitter_default_permission_set": "LEARNER",
        "metadata": {
            "owners": [{"id": owner, "given_name": given_name, "family_name": family_name,
                        "email": student.email}],
            "group": {"id": f"assignment-{assignment.id}", "name": assignment.title,
                      "type": "ASSIGNMENT"},
            "group_context": {"id": f"course-{assignment.course.id}",
                              "name": str(assignment.course)},
        },
    }


def report_summary(remote_id, report):
    return {
        "source": "turnitin",
        "turnitin_id": remote_id,
        "overall": round(report["overall_match_percentage"]),
        "internet": report.get("internet_match_percentage"),
        "publication": report.get("publication_match_percentage"),
        "submitted_works": report.get("submitted_works_match_percentage"),
        "matches": [
            {"name": match.get("name"), "percent": match.get("percentage")}
            for match in (report.get("top_matches") or [])[:TOP_MATCHES]
        ],
        "generated_at": report.get("time_generated"),
    }


def check(submission, config, redis):
    """Run the submission through Turnitin, resuming wherever an earlier run stopped."""
    extension = Path(submission.filename).suffix.lower().lstrip(".")
    if extension not in READABLE_TYPES:
        raise StepSkipped(f"Not checked: Turnitin cannot read .{extension} files")
    client = client_for(config, redis)
    wait = Wait(config["TURNITIN_POLL_SECONDS"], config["TURNITIN_POLL_INTERVAL"],
                config["TURNITIN_RECHECK_SECONDS"])
    record = db.session.execute(
        db.select(ExternalRecord).filter_by(submission_id=submission.id, service=SERVICE)
    ).scalar_one_or_none() or ExternalRecord(submission_id=submission.id, service=SERVICE,
                                             state="")

    if record.state == "unreadable":
        raise StepSkipped(f"Not checked: {record.data['reason']}")
    if record.state in ("", "creating", "created"):
        _send_file(client, submission, record)
    if record.state == "uploaded":
        _request_report(client, record, wait)
    if record.state == "requested":
        _fetch_report(client, record, wait)

    summary = {key: value for key, value in record.data.items() if key != UNCONFIRMED}
    submission.similarity = summary["overall"]
    submission.similarity_report = summary
    db.session.commit()
    detail = f"Similarity {summary['overall']}% (Turnitin)"
    if summary["matches"]:
        detail += f"; top source: {summary['matches'][0]['name']}"
    return detail


def _save(record, state, data=None):
    """Record a stage; new data replaces the old, except the count of unconfirmed creates."""
    record.state = state
    if data is not None:
        unconfirmed = (record.data or {}).get(UNCONFIRMED)
        record.data = {**data, UNCONFIRMED: unconfirmed} if unconfirmed else data
    db.session.add(record)
    db.session.commit()
    log.info("event=turnitin submission_id=%s turnitin_id=%s state=%s",
             record.submission_id, record.remote_id, state)


def _send_file(client, submission, record):
    remote = client.get_submission(record.remote_id) if record.remote_id else None
    if remote is None:
        remote = _create(client, submission, record)
    if remote["status"] == "CREATED":
        client.upload_original(record.remote_id, submission.stored_path, submission.filename)
    _save(record, "uploaded")


def _create(client, submission, record):
    if record.state == "creating":
        unconfirmed = (record.data or {}).get(UNCONFIRMED, 0) + 1
        record.data = {**(record.data or {}), UNCONFIRMED: unconfirmed}
        log.warning("event=turnitin_create_unconfirmed submission_id=%s unconfirmed_creates=%s",
                    record.submission_id, unconfirmed)
    # Left in place only by a try whose fate we cannot know: a crash, or no answer to a request
    # that may have arrived. A clear answer, or a call never made, puts it back.
    _save(record, "creating")
    try:
        remote = client.create_submission(submission_metadata(submission))
    except (TurnitinError, RetryLater, Refused) as exc:
        if not getattr(exc, "answer_lost", False):
            _save(record, "")
        raise
    record.remote_id = remote["id"]
    # Saved before the upload: a re-run finds this submission and resumes it.
    _save(record, "created", {})
    return remote


def _request_report(client, record, wait):
    remote = wait.until(
        lambda: client.get_submission(record.remote_id),
        lambda found: found is None or found["status"] != "PROCESSING",
        "Turnitin is still reading the file",
    )
    if remote is None:
        lost, record.remote_id = record.remote_id, None
        _save(record, "")
        raise TurnitinError(f"Turnitin no longer has submission {lost}; starting again")
    if remote["status"] == "CREATED":
        _save(record, "created")
        raise TurnitinError(f"Turnitin has no file for {record.remote_id}; sending it again")
    if remote["status"] == "ERROR":
        code = remote.get("error_code") or "UNKNOWN"
        reason = UNREADABLE.get(code, f"Turnitin could not process the file ({code})")
        _save(record, "unreadable", {"reason": reason, "error_code": code})
        raise StepSkipped(f"Not checked: {reason}")
    client.request_similarity(record.remote_id, REPORT_SETTINGS)
    _save(record, "requested")


def _fetch_report(client, record, wait):
    report = wait.until(
        lambda: client.get_similarity(record.remote_id),
        lambda found: found is None or found.get("status") == "COMPLETE",
        "Turnitin is still writing the report",
    )
    if report is None:
        _save(record, "uploaded")
        raise TurnitinError(f"Turnitin has no report request for {record.remote_id}; asking again")
    _save(record, "complete", report_summary(record.remote_id, report))
