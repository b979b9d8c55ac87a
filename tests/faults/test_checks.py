"""The fault suite's checks must catch a broken trail and a receipt sent twice, or the faults
prove nothing."""

from email.message import EmailMessage
from types import SimpleNamespace

from app.extensions import db
from app.models import ExternalRecord, Submission
from tests.faults.checks import Expected, receipts, trail_problems, turnitin_submissions
from tests.faults.workload import Upload

RECEIVED = ("submission", "", "received")
PROCESSING = ("submission", "", "processing")


def step_run(name, *statuses):
    return [("step", name, status) for status in statuses]


def completed_trail():
    events = [RECEIVED, *step_run("scan", "queued", "running"), PROCESSING,
              *step_run("scan", "succeeded"), *step_run("store", "queued", "running", "succeeded")]
    for name in ("plagiarism", "admin_sync", "email"):
        events += step_run(name, "queued", "running", "succeeded")
    events += step_run("thumbnail", "queued", "running", "skipped")
    return [*events, ("submission", "", "completed")]


def test_a_complete_trail_in_order_passes():
    assert trail_problems("completed", completed_trail()) == []


def test_a_step_rerun_after_a_crash_passes():
    events = completed_trail()
    at = events.index(("step", "email", "running"))
    events[at + 1:at + 1] = step_run("email", "queued", "running")
    assert trail_problems("completed", events) == []


def test_a_missing_step_is_caught():
    events = [e for e in completed_trail() if e[1] != "admin_sync"]
    assert trail_problems("completed", events) == [
        "admin_sync: [] does not end in exactly one final status"]


def test_a_step_finishing_twice_is_caught():
    events = completed_trail()
    events.insert(-1, ("step", "email", "succeeded"))
    assert trail_problems("completed", events) == [
        "email: ['queued', 'running', 'succeeded', 'succeeded'] does not end in exactly one "
        "final status"]


def test_an_event_after_the_outcome_is_caught():
    events = [*completed_trail(), ("step", "thumbnail", "running")]
    assert "ends with ('step', 'thumbnail', 'running'), not ('submission', '', 'completed')" \
        in trail_problems("completed", events)


def test_a_step_queued_before_its_dependency_finished_is_caught():
    events = completed_trail()
    events.remove(("step", "store", "queued"))
    events.insert(1, ("step", "store", "queued"))
    assert trail_problems("completed", events) == ["store was queued before scan finished"]


def test_a_rejected_file_must_fail_its_scan_and_skip_the_rest():
    events = [RECEIVED, *step_run("scan", "queued", "running"), PROCESSING,
              *step_run("scan", "failed")]
    events += [("step", name, "skipped")
               for name in ("store", "plagiarism", "admin_sync", "email", "thumbnail")]
    assert trail_problems("rejected", [*events, ("submission", "", "rejected")]) == []
    assert trail_problems("completed", [*events, ("submission", "", "completed")]) == [
        "scan: ended failed"]


def receipt(submission_id, to, message_id):
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = f"Receipt: CS101 Essay (#{submission_id})"
    message["Message-ID"] = message_id
    return message


def test_a_receipt_delivered_twice_with_the_same_message_id_is_caught(world):
    expected = {7: Expected(Upload("essay.txt", b"essay", False), world.users["alice"].id)}
    once = [receipt(7, "alice@uni.test", "<receipt-7@submissions.test>")]
    assert receipts(expected, once) == []
    assert receipts(expected, once * 2) == [
        "submission 7 (completed): 2 receipts delivered, expected 1; Message-IDs "
        "['<receipt-7@submissions.test>', '<receipt-7@submissions.test>']"]


def test_a_copy_is_allowed_only_where_a_worker_was_killed_mid_send(world):
    expected = {7: Expected(Upload("essay.txt", b"essay", False), world.users["alice"].id),
                8: Expected(Upload("essay.txt", b"essay", False), world.users["alice"].id)}
    seven = receipt(7, "alice@uni.test", "<receipt-7@submissions.test>")
    eight = receipt(8, "alice@uni.test", "<receipt-8@submissions.test>")
    assert receipts(expected, [seven, seven, eight], copies_allowed=1) == []
    # One kill, one copy: a second one is a real duplicate.
    assert receipts(expected, [seven, seven, eight, eight], copies_allowed=1) == [
        "submission 8 (completed): 2 receipts delivered, expected 1; Message-IDs "
        "['<receipt-8@submissions.test>', '<receipt-8@submissions.test>']"]
    # A second message under another Message-ID is never a copy.
    other = receipt(7, "alice@uni.test", "<another@submissions.test>")
    assert len(receipts(expected, [seven, other, eight], copies_allowed=1)) == 1


def checked_essay(world, remote_id, data=None):
    """A completed essay whose Turnitin record names `remote_id`."""
    submission = Submission(assignment=world.essay, student=world.users["alice"],
                            filename="essay.txt", content_type="text/plain", size=5,
                            sha256="0" * 64, status="completed")
    db.session.add(submission)
    db.session.flush()
    db.session.add(ExternalRecord(submission_id=submission.id, service="turnitin",
                                  remote_id=remote_id, state="complete", data=data or {}))
    db.session.commit()
    return submission.id, Expected(Upload("essay.txt", b"essay", False), world.users["alice"].id)


def turnitin_holding(with_file, empty):
    held = {tid: {"uploaded_at": 1.0} for tid in with_file}
    held.update({tid: {"uploaded_at": None} for tid in empty})
    return SimpleNamespace(submissions=held)


def test_an_empty_turnitin_submission_is_allowed_only_where_a_create_went_unanswered(world):
    first, first_expected = checked_essay(world, "t-1", {"unconfirmed_creates": 1})
    second, second_expected = checked_essay(world, "t-2")
    expected = {first: first_expected, second: second_expected}
    assert turnitin_submissions(expected, turnitin_holding(["t-1", "t-2"], [])) == []
    assert turnitin_submissions(expected, turnitin_holding(["t-1", "t-2"], ["lost"])) == []
    assert turnitin_submissions(expected, turnitin_holding(["t-1", "t-2"], ["a", "b"])) == [
        "Turnitin holds 2 submissions without a file; our records count only 1 creates "
        "that went unanswered"]
    assert turnitin_submissions(expected, turnitin_holding(["t-1"], [])) == [
        f"submission {second}: Turnitin holds no submission t-2"]
