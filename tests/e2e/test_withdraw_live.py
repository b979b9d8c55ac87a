"""Staff confirm a release, then withdraw it: the student's open page shows the mark, then
stops showing it, without a reload, in real Chromium against gunicorn and a real worker."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.test_grade_release import LIVE_WAIT_MS, new_page
from tests.test_grades import submission_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_withdrawn_grade_leaves_the_students_open_page(live_server, browser_page, world):
    alice_sub = submission_for(world, "alice")
    student = browser_page
    login(student, live_server, "alice")
    student.goto(f"{live_server}/submissions/{alice_sub}")
    student.evaluate("window.stillTheSamePage = true")

    marker = new_page(browser_page)
    login(marker, live_server, "sam")
    marker.goto(f"{live_server}/staff/assignments/{world.essay.id}")
    marker.fill(f"#s{alice_sub}-score", "40")
    marker.locator(f"#row-{alice_sub} button[type=submit]").click()
    expect(marker.locator("#marked-count")).to_have_text("1")
    marker.click("#release-now")
    # Unticked, the browser will not send it, and nothing is released.
    expect(marker.locator("#release-now")).to_be_visible()
    marker.check("#confirm-release")
    marker.click("#release-now")
    expect(student.locator("#grade .score")).to_have_text("40.0 / 50", timeout=LIVE_WAIT_MS)

    marker.goto(f"{live_server}/staff/assignments/{world.essay.id}")
    marker.click("#withdraw-release")
    expect(marker.locator(".notice")).to_contain_text("Grades withdrawn")
    expect(student.locator("#grade")).to_have_text("Not released yet.", timeout=LIVE_WAIT_MS)
    assert student.evaluate("window.stillTheSamePage") is True
