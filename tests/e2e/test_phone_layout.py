"""Every student page fits a phone (390 x 844) and a desktop: the header's Log out stays on
screen, step details and messages stay in their card, nothing scrolls sideways, and no word is
broken mid-word, in real Chromium against gunicorn."""

import pytest

from app.extensions import db
from app.models import Submission
from app.pipeline import record_step
from tests.e2e.conftest import login
from tests.e2e.test_live_page import essay_pdf, upload

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 1000}

# Words drawn on more than one line; a fingerprint is allowed to wrap.
BROKEN_WORDS = """() => {
  const broken = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const parent = node.parentElement;
    if (!parent || parent.closest('#sha256, script, [hidden]')) continue;
    if (!parent.getClientRects().length) continue;
    // A break after a hyphen is where a reader expects one.
    for (const match of node.data.matchAll(/[^\\s-]+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      if (tops.size > 1) broken.push(match[0]);
    }
  }
  return broken;
}"""
OUTSIDE_THEIR_CARD = """() => [...document.querySelectorAll(
    '.step > *, dl.facts dd, .message, .compose textarea, .compose-actions > *')]
  .filter((el) => {
    const card = el.closest('.card, main').getBoundingClientRect();
    const box = el.getBoundingClientRect();
    return box.right > card.right + 1 || box.left < card.left - 1;
  }).map((el) => el.textContent.trim())"""


def student_pages(page, web_server, world):
    alice = world.users["alice"].id
    login(page, web_server.url, "alice")
    submission_id = upload(page, web_server.url, world.essay.id, "a-rather-long-file-name.pdf",
                           essay_pdf("An essay"))
    submission = db.session.get(Submission, submission_id)
    submission.stored_path = "/nowhere"
    record_step(submission.step("scan"), "succeeded", "No threats found")
    record_step(submission.step("plagiarism"), "skipped",
                "Not checked: too little text to compare (fewer than 40 words)")
    db.session.commit()
    for where in (f"/courses/{world.cs.id}", f"/courses/{world.cs.id}/private/{alice}",
                  f"/assignments/{world.essay.id}"):
        page.goto(f"{web_server.url}{where}")
        page.fill("#message-body", "Is the lab open on Friday afternoon, or only in the morning?")
        page.click("#send-message")
        page.locator("#messages li.message").wait_for()
    return ["/", f"/assignments/{world.essay.id}", f"/submissions/{submission_id}",
            f"/courses/{world.cs.id}", f"/courses/{world.cs.id}/private/{alice}"]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_student_pages_fit_the_screen_without_breaking_words(
        web_server, browser_page, world, viewport):
    page = browser_page
    page.set_viewport_size(viewport)
    for path in student_pages(page, web_server, world):
        page.goto(f"{web_server.url}{path}")
        name = "phone" if viewport is PHONE else "desktop"
        page.screenshot(path=f"/tmp/layout-{name}{path.replace('/', '_')}.png", full_page=True)
        logout = page.locator("header button", has_text="Log out").bounding_box()
        assert logout["x"] >= 0 and logout["x"] + logout["width"] <= viewport["width"], path
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], path
        assert page.evaluate(OUTSIDE_THEIR_CARD) == [], path
        assert page.evaluate(BROKEN_WORDS) == [], path
