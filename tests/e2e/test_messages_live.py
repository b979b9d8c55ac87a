"""Two people on one assignment's page, in two browser contexts of real Chromium against
gunicorn: what one writes appears on the other's open page without a reload, with its link
clickable and its markup shown as text; staff hide it and it leaves both pages at once; staff
pin an announcement and the student's page shows it, and the notice, as it happens; and the
student's assignment list counts what is new as it arrives, and forgets it once it is read in
another tab."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.e2e.test_grade_release import LIVE_WAIT_MS, new_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WRITTEN = "Is <b>this</b> allowed? See https://example.org/rules"


def test_a_message_appears_live_on_the_other_open_page_and_a_hide_removes_it(
        web_server, browser_page, world):
    url = f"{web_server.url}/assignments/{world.essay.id}"
    student = browser_page
    login(student, web_server.url, "alice")
    student.goto(url)
    staff = new_page(browser_page)
    login(staff, web_server.url, "sam")
    staff.goto(url)
    for page in (student, staff):
        expect(page.locator("#no-messages")).to_be_visible()
        # Anything that reloads the page would lose this mark.
        page.evaluate("window.stillTheSamePage = true")

    student.fill("#message-body", WRITTEN)
    student.click("#send-message")
    expect(student.locator("#message-body")).to_have_value("")
    sent = student.locator("#messages li.message")
    expect(sent).to_have_count(1)
    message_id = sent.get_attribute("data-message-id")

    arrived = staff.locator(f"#message-{message_id}")
    expect(arrived).to_be_visible(timeout=LIVE_WAIT_MS)
    expect(arrived.locator(".message-body")).to_have_text(WRITTEN)
    expect(arrived.locator(".author")).to_have_text("Alice")
    assert arrived.locator("b").count() == 0
    link = arrived.locator("a")
    expect(link).to_have_attribute("href", "https://example.org/rules")
    expect(link).to_have_attribute("rel", "noopener nofollow ugc")

    arrived.locator("button[value=hide]").click()
    expect(staff.locator(f"#message-{message_id}")).to_have_count(0)
    expect(student.locator(f"#message-{message_id}")).to_have_count(0, timeout=LIVE_WAIT_MS)
    expect(student.locator("#no-messages")).to_be_visible()

    staff.fill("#message-body", "Yes: tags are fine in code blocks.")
    staff.check("#pin-message")
    staff.click("#send-message")
    expect(student.locator("#pinned")).to_contain_text("Yes: tags are fine in code blocks.",
                                                       timeout=LIVE_WAIT_MS)
    expect(student.locator("#flash-area")).to_contain_text(
        "Announcement in CS101: Essay: Yes: tags are fine", timeout=LIVE_WAIT_MS)
    expect(student.locator("#messages .badge.staff")).to_have_text("Staff")
    for page in (student, staff):
        assert page.evaluate("window.stillTheSamePage") is True

    # On the assignment list, what others write is counted as it arrives.
    student.goto(f"{web_server.url}/")
    badge = student.locator(f'[data-unread-for="assignment.{world.essay.id}"]')
    expect(badge).to_be_hidden()
    staff.fill("#message-body", "One more thing about the essay.")
    staff.click("#send-message")
    expect(badge).to_have_text("1 new", timeout=LIVE_WAIT_MS)

    # Read in another tab, the message is no longer new on the list still open in this one.
    student.evaluate("window.stillTheSamePage = true")
    other_tab = student.context.new_page()
    other_tab.goto(url)
    expect(other_tab.locator("#messages")).to_contain_text("One more thing about the essay.")
    expect(badge).to_be_hidden(timeout=LIVE_WAIT_MS)
    assert student.evaluate("window.stillTheSamePage") is True
    other_tab.close()
