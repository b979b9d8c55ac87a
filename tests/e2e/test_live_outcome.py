"""The open submission page follows what happens to the work without a reload: the download
link once the file is stored, and a rejection shown as a rejection (no "On time", no green bar,
no "not checked yet"), in real Chromium against gunicorn."""

import pytest

from app.extensions import db
from app.models import Submission
from app.pipeline import record_step, record_submission, skip_remaining
from tests.e2e.conftest import login
from tests.e2e.test_live_page import essay_pdf, upload

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LIVE_WAIT_MS = 15_000


def student_watching_a_new_submission(page, web_server, world):
    login(page, web_server.url, "alice")
    submission_id = upload(page, web_server.url, world.essay.id, "essay.pdf",
                           essay_pdf("An essay"))
    page.evaluate("() => { window.notReloaded = true; }")
    return db.session.get(Submission, submission_id)


def test_download_link_appears_once_the_file_is_stored(web_server, browser_page, world):
    page = browser_page
    submission = student_watching_a_new_submission(page, web_server, world)
    assert page.locator("#download a").count() == 0

    record_step(submission.step("store"), "succeeded", "Stored safely")
    db.session.commit()
    link = page.locator("#download a")
    link.wait_for(timeout=LIVE_WAIT_MS)
    assert link.inner_text() == "download"
    assert link.get_attribute("href") == f"/submissions/{submission.id}/file"
    assert page.evaluate("() => window.notReloaded === true")


def test_rejection_arriving_live_reads_as_a_rejection(web_server, browser_page, world):
    page = browser_page
    submission = student_watching_a_new_submission(page, web_server, world)
    assert page.inner_text("#timing") == "On time"

    reason = "Not accepted: ClamAV (clamd) found Submissions.Test.EICAR in this file."
    record_step(submission.step("scan"), "failed", reason, error=reason)
    skip_remaining(submission, "Not run: the file was not accepted")
    record_submission(submission, "rejected", reason)
    db.session.commit()
    page.wait_for_selector("#submission-status.rejected", timeout=LIVE_WAIT_MS)

    assert page.inner_text("#timing") == "Not accepted"
    assert page.get_attribute("#progress", "class") == "rejected"
    assert page.inner_text("#similarity") == "Not checked: the file was not accepted."
    assert page.inner_text("#thumbnail") == "No preview: the file was not accepted."
    assert page.inner_text("#submission-detail") == (
        "Not accepted: the virus check found Submissions.Test.EICAR in this file.")
    assert page.evaluate("() => window.notReloaded === true")
    page.screenshot(path="/tmp/rejected-live.png", full_page=True)
