"""What a student reads about their submission's checks. The steps record details for staff and
the audit trail (scanner names, settings, the outbox, other receipt numbers); a student is shown
the same facts in plain words, and never another student's receipt number."""

import re

WAITING = {
    "pending": "Waiting for the earlier checks",
    "queued": "Waiting to start",
    "retrying": "Taking longer than usual; trying again shortly",
}
SUCCEEDED = {
    "scan": "No viruses found",
    "store": "Your file is stored safely",
    "admin_sync": "Recorded in the student records system",
    "thumbnail": "Preview ready",
}
SKIPPED = {
    "admin_sync": "Not needed: this course does not send work to a student records system",
}
SCANNER_FOUND = re.compile(r"^Not accepted: .+? found (.+?) in this file\.")
SIMILARITY = re.compile(r"^Similarity (\d+)%")
EMAILED = re.compile(r"^(?:Sent|Already sent) to (\S+?)(?:;.*)?$")


def student_step_detail(step, status, detail, submission_id):
    detail = detail or ""
    if status == "running":
        return detail
    if status in WAITING:
        return WAITING[status]
    if status == "failed":
        # Other failures are recorded in words meant for students; the system's reply is
        # the step's error, which only staff see.
        return student_submission_detail("rejected", detail) if step == "scan" else detail
    if status == "skipped":
        if detail.startswith("Not run:"):
            return detail
        return SKIPPED.get(step, detail)
    if step == "plagiarism":
        found = SIMILARITY.match(detail)
        return (f"Similarity {found.group(1)}% with other work"
                if found else "Similarity checked")
    if step == "email":
        sent = EMAILED.match(detail)
        if sent:
            return f"Receipt emailed to {sent.group(1)}"
        return (f"No email is sent from this site: your receipt number is #{submission_id}; "
                "keep it, or find it again here")
    return SUCCEEDED.get(step, detail)


def student_submission_detail(status, detail):
    detail = detail or ""
    if status == "rejected":
        return SCANNER_FOUND.sub(r"Not accepted: the virus check found \1 in this file.", detail)
    return detail


def for_student(type, data):
    """A step or submission event with its detail reworded for a student."""
    if "detail" not in data:
        return data
    if type == "step":
        return {**data, "detail": student_step_detail(
            data.get("step"), data.get("status"), data.get("detail"), data.get("submission_id"))}
    if type == "submission":
        return {**data, "detail": student_submission_detail(data.get("status"),
                                                            data.get("detail"))}
    return data
