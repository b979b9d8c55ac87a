"""Students read what happened to their work in plain words, never the operator's settings
nor another student's receipt number; the course's staff still see the details as recorded."""

import html

import pytest

from app.events import hub as event_hub
from app.extensions import db
from app.models import Submission
from app.pipeline import record_step, record_submission
from tests.e2e.live import client_for, follow
from tests.helpers import alice_essay_submission, logged_in

RAW = {
    "scan": ("succeeded",
             "No threats found; scanned by the built-in hash-signature scanner "
             "(no clamd configured)"),
    "store": ("succeeded", "Stored safely; SHA-256 0123456789ab… verified"),
    "plagiarism": ("succeeded",
                   "Similarity 87% (compared with 3 other submissions); "
                   "closest: submission #4242 (87%)"),
    "admin_sync": ("skipped",
                   "Not sent: no student-records system is configured (ADMIN_SYNC_URL)"),
    "email": ("succeeded", "Saved to the outbox for alice@uni.test (no mail server configured)"),
    "thumbnail": ("succeeded", "Preview ready (pdf)"),
}
JARGON = ["clamd", "ADMIN_SYNC_URL", "outbox", "#4242", "hash-signature", "no mail server"]


@pytest.fixture
def processed(world):
    submission = alice_essay_submission(world)
    for name, (status, detail) in RAW.items():
        record_step(submission.step(name), status, detail)
    record_submission(submission, "completed", "All checks finished")
    db.session.commit()
    return submission.id


def test_student_page_and_api_say_what_happened_in_plain_words(app, processed):
    alice = logged_in(app, "alice@uni.test")
    page = html.unescape(alice.get(f"/submissions/{processed}").get_data(as_text=True))
    api = alice.get(f"/api/v1/submissions/{processed}").get_json()
    details = " ".join(step["detail"] for step in api["steps"])
    for said in (page, details):
        for word in JARGON:
            assert word not in said
        assert "No viruses found" in said
        assert "Similarity 87% with other work" in said
        assert "Not needed: this course does not send work to a student records system" in said
        assert f"No email is sent from this site: your receipt number is #{processed}" in said


def test_staff_still_see_the_details_as_recorded(app, processed):
    sam = logged_in(app, "sam@uni.test")
    page = html.unescape(sam.get(f"/submissions/{processed}").get_data(as_text=True))
    api = sam.get(f"/api/v1/submissions/{processed}").get_json()
    for said in (page, " ".join(step["detail"] for step in api["steps"])):
        for _, detail in RAW.values():
            assert detail in said


def test_rejection_names_the_virus_but_not_the_scanner_setup(app, processed):
    submission = db.session.get(Submission, processed)
    reason = ("Not accepted: the built-in hash-signature scanner (no clamd configured) found "
              "Eicar-Test-Signature in this file. Check your computer for malware, then submit a "
              "clean copy.")
    record_step(submission.step("scan"), "failed", reason, error=reason)
    record_submission(submission, "rejected", reason)
    db.session.commit()
    alice = logged_in(app, "alice@uni.test")
    page = html.unescape(alice.get(f"/submissions/{processed}").get_data(as_text=True))
    assert "Not accepted: the virus check found Eicar-Test-Signature in this file." in page
    assert "clamd" not in page


def test_live_step_events_reach_the_student_in_plain_words(app, processed):
    app.config.update(SSE_HEARTBEAT_SECONDS=0.2, SSE_GAP_WAIT_SECONDS=0.5)
    topic = f"submission.{processed}"
    readers = {name: follow(client_for(app, name), topic) for name in ("alice", "sam")}
    try:
        submission = db.session.get(Submission, processed)
        record_step(submission.step("plagiarism"), "succeeded", RAW["plagiarism"][1])
        db.session.commit()
        seen = {name: reader.events(1)[0].data for name, reader in readers.items()}
        assert seen["alice"]["detail"] == "Similarity 87% with other work"
        assert seen["sam"]["detail"] == RAW["plagiarism"][1]
    finally:
        for reader in readers.values():
            reader.close()
        event_hub.stop_hub()
