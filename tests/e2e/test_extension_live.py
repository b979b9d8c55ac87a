"""Staff grant a student an extension after the assignment closed: the student's open page shows
their new deadline and the upload form, with a flash message, without a reload, and the work
they then submit is on time, in real Chromium against gunicorn."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import utcnow
from tests.e2e.conftest import login
from tests.e2e.test_grade_release import LIVE_WAIT_MS, new_page
from tests.test_extensions import minute, shown, typed

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_students_open_page_opens_again_when_staff_grant_an_extension(
        web_server, browser_page, world, tmp_path):
    world.essay.due_at = utcnow() - timedelta(days=2)
    world.essay.cutoff_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    essay, alice_id = world.essay.id, world.users["alice"].id

    student = browser_page
    login(student, web_server.url, "alice")
    student.goto(f"{web_server.url}/assignments/{essay}")
    expect(student.locator("#closed")).to_contain_text("Submissions closed at")
    expect(student.locator("#upload-form")).to_have_count(0)
    student.evaluate("window.stillTheSamePage = true")

    due, cutoff = minute(utcnow() + timedelta(hours=2)), minute(utcnow() + timedelta(hours=4))
    marker = new_page(browser_page)
    login(marker, web_server.url, "sam")
    marker.goto(f"{web_server.url}/staff/assignments/{essay}")
    marker.select_option("#extension-student", str(alice_id))
    marker.fill("#extension-due", typed(due))
    marker.fill("#extension-cutoff", typed(cutoff))
    marker.fill("#extension-reason", "Medical note")
    marker.click("#grant-extension")
    expect(marker.locator(".notice.success")).to_contain_text("Extension granted to Alice")
    expect(marker.locator(f"#extension-{alice_id}")).to_contain_text("Medical note")

    expect(student.locator("#extended")).to_have_text("Your extension", timeout=LIVE_WAIT_MS)
    expect(student.locator("#due")).to_contain_text(shown(due))
    expect(student.locator("#closes")).to_contain_text(shown(cutoff))
    expect(student.locator("#countdown")).to_contain_text("Due in")
    expect(student.locator("#upload-form")).to_be_visible()
    expect(student.locator("#closed")).to_have_count(0)
    expect(student.locator("#flash-area")).to_contain_text(
        "You have an extension for CS101: Essay", timeout=LIVE_WAIT_MS)
    assert student.evaluate("window.stillTheSamePage") is True

    essay_file = tmp_path / "essay.txt"
    essay_file.write_text("Submitted within my extension.\n")
    student.set_input_files("#file", str(essay_file))
    student.click("#upload-button")
    student.wait_for_url(f"{web_server.url}/submissions/*")
    expect(student.locator("#timing")).to_have_text("On time")
    expect(student.locator("#own-deadline")).to_contain_text(shown(due))
