"""The submission page as a student gets it says plainly what became of work that was not
accepted or whose check was skipped, instead of "On time" and "not checked yet"."""

import html

from app.extensions import db
from app.pipeline import record_step, record_submission, skip_remaining
from tests.helpers import alice_essay_submission, logged_in


def page_of(app, submission_id):
    alice = logged_in(app, "alice@uni.test")
    return html.unescape(alice.get(f"/submissions/{submission_id}").get_data(as_text=True))


def test_rejected_work_is_not_on_time_not_waiting_and_not_green(app, world):
    submission = alice_essay_submission(world)
    reason = "Not accepted: ClamAV (clamd) found Submissions.Test.EICAR in this file."
    record_step(submission.step("scan"), "failed", reason, error=reason)
    skip_remaining(submission, "Not run: the file was not accepted")
    record_submission(submission, "rejected", reason)
    db.session.commit()

    page = page_of(app, submission.id)
    assert '<span id="timing" class="badge rejected">Not accepted</span>' in page
    assert "On time" not in page
    assert "Not checked yet" not in page and "No preview yet" not in page
    assert "Not checked: the file was not accepted." in page
    assert "No preview: the file was not accepted." in page
    assert '<progress id="progress" class="rejected"' in page


def test_a_skipped_similarity_check_says_why(app, world):
    submission = alice_essay_submission(world)
    record_step(submission.step("plagiarism"), "skipped",
                "Not checked: too little text to compare (fewer than 5 words)")
    db.session.commit()
    page = page_of(app, submission.id)
    assert "Not checked yet" not in page
    assert "Not checked: too little text to compare (fewer than 5 words)" in page
