"""Feedback written over several lines reaches the student over several lines, live and after
a reload, in real Chromium against gunicorn and a real worker."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.test_grade_release import LIVE_WAIT_MS, new_page
from tests.test_grades import submission_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FEEDBACK = "Strengths: clear structure.\nTo improve: cite your sources.\n\nWell done overall."


def shown_lines(page):
    # innerText follows the page's CSS: lines the browser runs together come back as one.
    text = page.locator("#grade .feedback").inner_text()
    return [line for line in text.split("\n") if line.strip()]


def test_multi_line_feedback_keeps_its_lines_live_and_after_reload(
        live_server, browser_page, world):
    alice_sub = submission_for(world, "alice")
    student = browser_page
    login(student, live_server, "alice")
    student.goto(f"{live_server}/submissions/{alice_sub}")
    expect(student.locator("#grade")).to_contain_text("Not released yet")

    marker = new_page(browser_page)
    login(marker, live_server, "sam")
    marker.goto(f"{live_server}/staff/assignments/{world.essay.id}")
    marker.fill(f"#s{alice_sub}-score", "40")
    marker.fill(f"#s{alice_sub}-feedback", FEEDBACK)
    marker.locator(f"#row-{alice_sub} button[type=submit]").click()
    expect(marker.locator("#marked-count")).to_have_text("1")
    marker.check("#confirm-release")
    marker.click("#release-now")

    expect(student.locator("#grade .score")).to_have_text("40.0 / 50", timeout=LIVE_WAIT_MS)
    expected = ["Strengths: clear structure.", "To improve: cite your sources.",
                "Well done overall."]
    assert shown_lines(student) == expected
    student.reload()
    expect(student.locator("#grade .score")).to_have_text("40.0 / 50")
    assert shown_lines(student) == expected
