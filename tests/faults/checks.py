"""What must hold once a fault run has settled, whatever the fault was: each returns the list
of problems it found, so one failure shows them all."""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from app.extensions import db
from app.models import Event, ExternalRecord, Submission, User
from app.steps import STEP_BY_NAME, STEPS

TERMINAL = ("succeeded", "skipped", "failed")
RECEIPT_SUBJECT = re.compile(r"\(#(\d+)\)$")


@dataclass(frozen=True)
class Expected:
    upload: object  # tests.faults.workload.Upload
    student_id: int

    @property
    def status(self):
        return "rejected" if self.upload.infected else "completed"


def outcomes(expected):
    found = dict(db.session.execute(
        db.select(Submission.id, Submission.status).where(Submission.id.in_(expected))).all())
    return [f"submission {sid} ({want.upload.filename}) ended {found.get(sid)}, "
            f"expected {want.status}"
            for sid, want in expected.items() if found.get(sid) != want.status]


def receipts(expected, messages, copies_allowed=0):
    """Exactly one receipt per accepted submission, delivered once, to its student; none for a
    rejected one. A second delivery fails the run even with the same Message-ID: the mailer
    keeps the server's acceptance when the database loses its record of it. The one window
    it documents, a worker killed between the server's acceptance and that note, is allowed
    `copies_allowed` times, and only as a copy with the same Message-ID."""
    emails = dict(db.session.execute(db.select(User.id, User.email)).all())
    per_submission = defaultdict(list)
    for message in messages:
        match = RECEIPT_SUBJECT.search(str(message["Subject"]))
        per_submission[int(match.group(1)) if match else None].append(message)
    problems = []
    for sid, want in expected.items():
        got = per_submission.pop(sid, [])
        count = 1 if want.status == "completed" else 0
        if count and len(got) == 2 and copies_allowed and \
                got[0]["Message-ID"] == got[1]["Message-ID"]:
            copies_allowed -= 1
            got = got[:1]
        if len(got) != count:
            problems.append(f"submission {sid} ({want.status}): {len(got)} receipts delivered, "
                            f"expected {count}; Message-IDs {[str(m['Message-ID']) for m in got]}")
        elif {str(m["To"]) for m in got} - {emails[want.student_id]}:
            problems.append(f"submission {sid}: receipt went to {[m['To'] for m in got]}")
    problems += [f"{len(extra)} emails for unknown submission {sid}"
                 for sid, extra in per_submission.items()]
    return problems


def student_records(expected, records):
    """The records system holds one record per accepted submission, each created once."""
    held = Counter(record["record"]["submission_id"] for record in records.records.values())
    accepted = {sid for sid, want in expected.items() if want.status == "completed"}
    created = sum(1 for r in records.requests("POST", "/records") if r.status == 201)
    problems = [f"submission {sid}: {held[sid]} student records, expected 1"
                for sid in accepted if held[sid] != 1]
    problems += [f"submission {sid}: recorded although rejected" for sid in set(held) - accepted]
    if created != len(records.records):
        problems.append(f"{created} records created for {len(records.records)} keys")
    return problems


def turnitin_submissions(expected, turnitin):
    """One Turnitin submission holding the file per checked submission. A create whose answer
    never reached us (a timeout, a worker killed mid-call) leaves an empty submission: TCA
    creates are not idempotent and cannot be looked up. The next run counts each such try in
    its record ("unconfirmed_creates"); empty submissions beyond that count are real doubles."""
    checked = {sid for sid, want in expected.items()
               if want.status == "completed" and want.upload.checked_by_turnitin}
    records = db.session.execute(
        db.select(ExternalRecord.submission_id, ExternalRecord.remote_id, ExternalRecord.data)
        .where(ExternalRecord.service == "turnitin")).all()
    remote = {sid: remote_id for sid, remote_id, _ in records}
    owned_up_to = sum((data or {}).get("unconfirmed_creates", 0) for _, _, data in records)
    held = turnitin.submissions
    problems = [f"submission {sid}: Turnitin holds no submission {remote.get(sid)}"
                for sid in checked if remote.get(sid) not in held]
    with_file = [tid for tid, sub in held.items() if sub["uploaded_at"] is not None]
    if sorted(with_file) != sorted(remote[sid] for sid in checked if remote.get(sid) in held):
        problems.append(f"Turnitin holds {len(with_file)} submissions with a file for "
                        f"{len(checked)} checked submissions")
    shells = len(held) - len(with_file)
    if shells > owned_up_to:
        problems.append(f"Turnitin holds {shells} submissions without a file; our records "
                        f"count only {owned_up_to} creates that went unanswered")
    return problems


def final_statuses(kind, step_name):
    if kind == "rejected":
        return ("failed",) if step_name == "scan" else ("skipped",)
    return ("succeeded", "skipped")


def trail_problems(kind, events):
    """Problems with one submission's trail: (type, step, status) tuples in event id order."""
    final = ("submission", "", kind)
    if not events or events[0] != ("submission", "", "received"):
        return [f"starts with {events[:1]}, not received"]
    problems = []
    if events[-1] != final:
        problems.append(f"ends with {events[-1]}, not {final}")
    ends = [e for e in events if e[0] == "submission" and e[2] not in ("received", "processing")]
    if ends != [final]:
        problems.append(f"submission outcomes {ends}")
    by_step = defaultdict(list)
    for position, (type_, step, status) in enumerate(events):
        if type_ == "step":
            by_step[step].append((position, status))
    for step in STEPS:
        seen = by_step.get(step.name, [])
        statuses = [status for _, status in seen]
        terminal = [status for status in statuses if status in TERMINAL]
        if len(terminal) != 1 or statuses[-1] not in TERMINAL:
            problems.append(f"{step.name}: {statuses} does not end in exactly one final status")
            continue
        if terminal[0] not in final_statuses(kind, step.name):
            problems.append(f"{step.name}: ended {terminal[0]}")
        if statuses[0] != "queued" and statuses != ["skipped"]:
            problems.append(f"{step.name}: {statuses} does not start queued")
        if terminal[0] == "succeeded" and "running" not in statuses:
            problems.append(f"{step.name}: succeeded without running")
        for needed in STEP_BY_NAME[step.name].depends_on:
            done_at = [p for p, s in by_step.get(needed, []) if s in TERMINAL]
            if kind == "completed" and done_at and seen[0][0] < done_at[0]:
                problems.append(f"{step.name} was queued before {needed} finished")
    return problems


def trails(expected):
    events = defaultdict(list)
    for submission_id, type_, payload in db.session.execute(
        db.select(Event.submission_id, Event.type, Event.payload)
        .where(Event.submission_id.in_(expected)).order_by(Event.id)
    ):
        events[submission_id].append((type_, payload.get("step", ""), payload["status"]))
    problems = []
    for sid, want in expected.items():
        problems += [f"submission {sid} trail: {p}"
                     for p in trail_problems(want.status, events[sid])]
    return problems
