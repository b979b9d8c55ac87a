import re
import time

import pytest

from app.extensions import db
from app.flash import send_flash
from app.models import FlashMessage, Submission
from app.pipeline import record_step, record_submission, skip_remaining
from tests.e2e.conftest import login
from tests.e2e.servers import WebServer
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ALL_SUCCEEDED = """() => {
  const steps = [...document.querySelectorAll('#steps [data-status]')];
  return steps.length === 6 && steps.every((step) => step.dataset.status === 'succeeded');
}"""
# Every status each step shows, in order, as the page changes it.
RECORD_STEP_CHANGES = """() => {
  window.stepChanges = {};
  for (const step of document.querySelectorAll('#steps [data-status]')) {
    window.stepChanges[step.dataset.step] = [step.dataset.status];
  }
  new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      const step = mutation.target;
      const seen = window.stepChanges[step.dataset.step];
      if (seen[seen.length - 1] !== step.dataset.status) seen.push(step.dataset.status);
    }
  }).observe(document.getElementById('steps'),
             { subtree: true, attributes: true, attributeFilter: ['data-status'] });
  window.notReloaded = true;
}"""


def essay_pdf(*lines):
    """A one-page PDF whose text the similarity check can read."""
    text = " ".join(f"({line}) Tj 0 -22 Td" for line in lines)
    content = f"BT /F1 15 Tf 36 340 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 380] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def upload(page, base_url, assignment_id, name, content):
    page.goto(f"{base_url}/assignments/{assignment_id}")
    page.set_input_files("#file", files=[
        {"name": name, "mimeType": "application/pdf", "buffer": content}])
    page.click("#upload-button")
    page.wait_for_url(re.compile(r".*/submissions/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def acked_at(message_id):
    db.session.expire_all()
    return db.session.get(FlashMessage, message_id).acked_at


def test_uploaded_work_turns_every_step_green_live_without_a_reload(
        web_server, start_worker, browser_page, world):
    page = browser_page
    login(page, web_server.url, "alice")
    submission_id = upload(page, web_server.url, world.essay.id, "essay.pdf", essay_pdf(
        "Why queues matter", "A request that does everything inline",
        "keeps the student waiting while the scanner,", "the store and the mail server",
        "take their turn."))
    # No worker yet: the steps wait, drawn from the database.
    assert page.get_attribute("#step-scan", "data-status") == "queued"
    assert page.inner_text("#similarity") == "Not checked yet."
    page.evaluate(RECORD_STEP_CHANGES)

    start_worker()
    page.wait_for_function(ALL_SUCCEEDED, timeout=60_000)
    page.wait_for_function(
        "() => document.getElementById('submission-status').textContent === 'completed'")
    page.wait_for_function(
        "() => /^\\d+%$/.test(document.getElementById('similarity').textContent)")
    page.wait_for_function(
        "() => document.querySelector('#thumbnail img')?.naturalWidth > 0")

    assert page.evaluate("window.notReloaded") is True
    changes = page.evaluate("window.stepChanges")
    assert changes["scan"] == ["queued", "running", "succeeded"]
    assert all(seen[-1] == "succeeded" and len(seen) >= 2 for seen in changes.values())
    assert page.get_attribute("#progress", "value") == "6"
    assert page.inner_text("#step-scan .step-detail") == "No viruses found"
    assert page.is_hidden("#connection")
    assert db.session.get(Submission, submission_id).status == "completed"
    page.screenshot(path="/tmp/submission-live.png", full_page=True)


def test_page_shows_it_is_offline_and_catches_up_after_reconnecting(
        web_server, stack_env, tmp_path, browser_page, world):
    page = browser_page
    login(page, web_server.url, "alice")
    submission_id = upload(page, web_server.url, world.essay.id, "essay.pdf",
                           essay_pdf("An essay"))
    page.wait_for_timeout(500)
    assert page.is_hidden("#connection")

    web_server.stop()
    page.wait_for_selector("#connection", state="visible", timeout=10_000)
    assert page.inner_text("#connection") == "Offline: reconnecting…"
    # Happens while the page cannot hear it.
    submission = db.session.get(Submission, submission_id)
    record_step(submission.step("scan"), "running", "Running (attempt 1)")
    db.session.commit()

    restarted = WebServer(web_server.env, tmp_path / "web-again.log", port=web_server.port)
    restarted.start()
    try:
        page.wait_for_selector("#connection", state="hidden", timeout=15_000)
        page.wait_for_function(
            "() => document.getElementById('step-scan').dataset.status === 'running'")
        assert page.inner_text("#step-scan .step-detail") == "Running (attempt 1)"
    finally:
        restarted.stop()


def test_flash_is_acknowledged_only_after_it_has_been_on_screen(
        web_server, browser_page, world):
    page = browser_page
    alice = world.users["alice"].id
    login(page, web_server.url, "alice")

    # Arrives, and the student clicks away before it has been on screen long enough.
    [quick] = send_flash([alice], "Your essay was received", level="success")
    db.session.commit()
    page.wait_for_selector(f".flash[data-flash-id='{quick.id}']")
    page.goto(f"{web_server.url}/assignments/{world.essay.id}")
    assert acked_at(quick.id) is None
    # The next page shows it again, and this time it stays in view.
    page.wait_for_selector(f".flash[data-flash-id='{quick.id}']")
    seen_again = time.time()
    wait_until(lambda: acked_at(quick.id) is not None, 10, "never acknowledged")
    assert acked_at(quick.id).timestamp() - seen_again >= 1.2

    # A dialog with a link and a button: acknowledged when its button is pressed.
    [modal] = send_flash([alice], "Grades for CS101 are out", level="info", modal=True,
                         link_url=f"/assignments/{world.essay.id}", link_text="See your grade",
                         button_text="Got it")
    db.session.commit()
    dialog = page.wait_for_selector(f"dialog[data-flash-id='{modal.id}'][open]")
    assert dialog.query_selector("a").inner_text() == "See your grade"
    dialog.query_selector("button").click()
    page.wait_for_selector(f"dialog[data-flash-id='{modal.id}']", state="detached")
    wait_until(lambda: acked_at(modal.id) is not None, 5,
               "the dialog's button did not acknowledge it")

    # One that hides itself after two seconds.
    [brief] = send_flash([alice], "Saved", hide_after=2)
    db.session.commit()
    page.wait_for_selector(f".flash[data-flash-id='{brief.id}']")
    page.wait_for_selector(f".flash[data-flash-id='{brief.id}']", state="detached",
                           timeout=5_000)
    page.reload()
    assert page.query_selector(".flash") is None


def staff_watching_a_new_submission(page, web_server, world):
    """Alice uploads an essay; then staff member Sam opens its page. Returns its id."""
    login(page, web_server.url, "alice")
    submission_id = upload(page, web_server.url, world.essay.id, "essay.pdf",
                           essay_pdf("An essay"))
    page.context.clear_cookies()
    login(page, web_server.url, "sam")
    page.goto(f"{web_server.url}/submissions/{submission_id}")
    return submission_id


def test_staff_see_the_requeue_button_when_a_step_fails_without_a_reload(
        web_server, browser_page, world):
    page = browser_page
    submission_id = staff_watching_a_new_submission(page, web_server, world)
    page.evaluate("() => { window.notReloaded = true; }")
    assert page.is_hidden("#step-email form.requeue")

    submission = db.session.get(Submission, submission_id)
    record_step(submission.step("email"), "failed", "Gave up after 8 attempts",
                error="SMTPServerDisconnected: Connection unexpectedly closed")
    db.session.commit()
    page.wait_for_selector("#step-email form.requeue", state="visible", timeout=10_000)
    assert page.inner_text("#step-email .step-error").startswith("SMTPServerDisconnected")
    assert page.is_hidden("#step-scan form.requeue")
    assert page.evaluate("() => window.notReloaded === true")

    page.click("#step-email form.requeue button")
    page.wait_for_selector("text=Receipt email was requeued.", timeout=10_000)
    assert page.is_hidden("#step-email form.requeue")
    assert page.get_attribute("#step-email", "data-status") == "queued"


def test_a_rejection_arriving_live_offers_staff_no_requeue(web_server, browser_page, world):
    page = browser_page
    submission_id = staff_watching_a_new_submission(page, web_server, world)

    # As the scan step records a rejection: its failure, then the submission's outcome.
    submission = db.session.get(Submission, submission_id)
    reason = "Not accepted: ClamAV (clamd) found Submissions.Test.EICAR in this file."
    record_step(submission.step("scan"), "failed", reason, error=reason)
    skip_remaining(submission, "Not run: the file was not accepted")
    record_submission(submission, "rejected", reason)
    db.session.commit()
    page.wait_for_selector("#submission-status.rejected", timeout=10_000)
    assert page.get_attribute("#step-scan", "data-status") == "failed"
    assert page.is_hidden("#step-scan form.requeue")
    page.reload()
    assert page.is_hidden("#step-scan form.requeue")
