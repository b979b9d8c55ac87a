"""The student-records system enrols a student in a course, renames them and removes them again
while their assignment list is open in real Chromium: the list gains the course's assignments,
follows the course's conversations, shows the new name and loses the course again, all without
a reload; and an open page of a course the student is removed from says so and takes no more
input."""

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import Message
from tests.conftest import Auth
from tests.e2e.conftest import RECORDS_SECRET, login
from tests.e2e.test_grade_release import LIVE_WAIT_MS
from tests.test_inbound_records import apply_all, message, send

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def from_records(app, kind, data):
    """What the records system would send, applied as the `records` queue's worker would."""
    answer = send(app.test_client(), message(kind, data), secret=RECORDS_SECRET)
    assert answer.status_code == 202
    apply_all()


def test_assignment_list_follows_the_students_enrolments_and_name_live(
        app, web_server, browser_page, world):
    app.config["ADMIN_SYNC_SECRET"] = RECORDS_SECRET
    essay_id = world.essay.id
    page = browser_page
    login(page, web_server.url, "carol")
    page.goto(f"{web_server.url}/")
    essay_row = page.locator(f"#assignment-{essay_id}")
    expect(page.locator("header .who")).to_have_text("Carol")
    expect(page.locator("#main")).to_contain_text("ART200")
    expect(essay_row).to_have_count(0)
    page.evaluate("window.stillTheSamePage = true")

    from_records(app, "enrolment.added", {"email": "carol@uni.test", "course": "CS101"})
    expect(essay_row).to_contain_text("Essay", timeout=LIVE_WAIT_MS)
    expect(page.locator("#courses")).to_contain_text("CS101: Programming")
    expect(page.locator("#flash-area")).to_contain_text("You are now enrolled in CS101")
    expect(page.locator("#main")).to_contain_text("ART200")

    # The redrawn list follows the new course's conversations too.
    badge = page.locator(f'[data-unread-for="assignment.{essay_id}"]')
    expect(badge).to_be_hidden()
    posted = app.test_client().post(f"/api/v1/assignments/{essay_id}/messages",
                                    json={"body": "Welcome, Carol"},
                                    headers=Auth(app.test_client()).token("bob@uni.test"))
    assert posted.status_code == 201, posted.get_data(as_text=True)
    expect(badge).to_have_text("1 new", timeout=LIVE_WAIT_MS)

    from_records(app, "student.renamed", {"email": "carol@uni.test", "name": "Carol Lewis"})
    expect(page.locator("header .who")).to_have_text("Carol Lewis", timeout=LIVE_WAIT_MS)

    from_records(app, "enrolment.removed", {"email": "carol@uni.test", "course": "CS101"})
    expect(essay_row).to_have_count(0, timeout=LIVE_WAIT_MS)
    expect(page.locator("#courses")).not_to_contain_text("CS101")
    expect(page.locator("#main")).to_contain_text("ART200")
    assert page.evaluate("window.stillTheSamePage") is True
    assert db.session.query(Message).count() == 1


def test_an_open_page_of_a_course_the_student_is_removed_from_says_so_and_takes_no_input(
        app, web_server, browser_page, world):
    app.config["ADMIN_SYNC_SECRET"] = RECORDS_SECRET
    page = browser_page
    login(page, web_server.url, "alice")
    page.goto(f"{web_server.url}/assignments/{world.essay.id}")
    expect(page.locator("#upload-button")).to_be_enabled()
    expect(page.locator("#send-message")).to_be_enabled()
    page.evaluate("window.stillTheSamePage = true")

    # Removed from another course: this page is not that course's, and stays as it is.
    from_records(app, "enrolment.added", {"email": "alice@uni.test", "course": "ART200"})
    from_records(app, "enrolment.removed", {"email": "alice@uni.test", "course": "ART200"})
    expect(page.locator("#flash-area")).to_contain_text("You are no longer enrolled in ART200",
                                                        timeout=LIVE_WAIT_MS)
    assert page.locator("#unenrolled").count() == 0
    expect(page.locator("#upload-button")).to_be_enabled()

    from_records(app, "enrolment.removed", {"email": "alice@uni.test", "course": "CS101"})
    expect(page.locator("#unenrolled")).to_have_text(
        "You are no longer enrolled in CS101: this page stays as it was, but nothing can be "
        "sent from it.", timeout=LIVE_WAIT_MS)
    expect(page.locator("#upload-button")).to_be_disabled()
    expect(page.locator("#send-message")).to_be_disabled()
    expect(page.locator("#message-body")).to_be_disabled()
    assert page.evaluate("window.stillTheSamePage") is True
