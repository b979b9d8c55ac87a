"""A student's open submission page shows the grade the moment staff release it, and a
colleague's marking page follows the marking as it happens, in real Chromium against gunicorn
and a real worker."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.test_grades import submission_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LIVE_WAIT_MS = 15_000


def new_page(browser_page):
    context = browser_page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def test_students_open_page_shows_the_grade_when_staff_release_it(
        live_server, browser_page, world):
    essay = world.essay.id
    alice_sub = submission_for(world, "alice")
    bob_sub = submission_for(world, "bob")

    student = browser_page
    login(student, live_server, "alice")
    student.goto(f"{live_server}/submissions/{alice_sub}")
    expect(student.locator("#grade")).to_contain_text("Not released yet")
    # Anything that reloads the page would lose this mark.
    student.evaluate("window.stillTheSamePage = true")

    marker = new_page(browser_page)
    login(marker, live_server, "sam")
    marker.goto(f"{live_server}/staff/assignments/{essay}")
    expect(marker.locator("#total-count")).to_have_text("2")
    marker.fill(f"#s{alice_sub}-score", "44")
    marker.fill(f"#s{alice_sub}-feedback", "Well structured; cite your sources.")
    marker.locator(f"#row-{alice_sub} button[type=submit]").click()
    expect(marker.locator("#marked-count")).to_have_text("1")

    # A colleague (an admin here) marks Bob; Sam's open page follows without a reload.
    colleague = new_page(browser_page)
    login(colleague, live_server, "root")
    colleague.goto(f"{live_server}/staff/assignments/{essay}")
    colleague.fill(f"#s{bob_sub}-score", "31")
    colleague.locator(f"#row-{bob_sub} button[type=submit]").click()
    expect(marker.locator("#marked-count")).to_have_text("2", timeout=LIVE_WAIT_MS)
    expect(marker.locator(f"#grade-status-{bob_sub}")).to_contain_text("31",
                                                                      timeout=LIVE_WAIT_MS)

    expect(student.locator("#grade")).to_contain_text("Not released yet")
    assert "44" not in student.locator("#grade").inner_text()

    marker.check("#confirm-release")
    marker.click("#release-now")
    expect(marker.locator(".notice")).to_contain_text("Releasing grades now")

    expect(student.locator("#grade .score")).to_have_text("44.0 / 50", timeout=LIVE_WAIT_MS)
    expect(student.locator("#grade .feedback")).to_have_text("Well structured; cite your sources.")
    expect(student.locator("#flash-area")).to_contain_text("Grades for CS101: Essay are out",
                                                           timeout=LIVE_WAIT_MS)
    expect(marker.locator("#released-count")).to_have_text("2", timeout=LIVE_WAIT_MS)

    # A change after release reaches the open page too.
    marker.goto(f"{live_server}/staff/assignments/{essay}")
    marker.fill(f"#s{alice_sub}-score", "46")
    marker.locator(f"#row-{alice_sub} button[type=submit]").click()
    expect(student.locator("#grade .score")).to_have_text("46.0 / 50", timeout=LIVE_WAIT_MS)
    assert student.evaluate("window.stillTheSamePage") is True
