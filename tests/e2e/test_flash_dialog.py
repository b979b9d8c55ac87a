"""A flash message shown as a dialog waits to be pressed: being on screen does not acknowledge
it and Escape does not close it, in real Chromium against gunicorn."""

import time

import pytest

from app.extensions import db
from app.flash import send_flash
from tests.e2e.conftest import login
from tests.e2e.test_live_page import acked_at

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_dialog_is_acknowledged_only_when_its_button_is_pressed(web_server, browser_page, world):
    page = browser_page
    login(page, web_server.url, "alice")
    [modal] = send_flash([world.users["alice"].id], "Grades for CS101 are out", modal=True,
                         button_text="Got it")
    db.session.commit()
    selector = f"dialog[data-flash-id='{modal.id}'][open]"
    page.wait_for_selector(selector)
    # Well past the moment an ordinary message counts as seen.
    time.sleep(4)
    assert acked_at(modal.id) is None

    for _ in range(3):
        page.keyboard.press("Escape")
        time.sleep(0.3)
    page.wait_for_selector(selector)
    assert acked_at(modal.id) is None

    page.click(f"{selector} button")
    page.wait_for_selector(f"dialog[data-flash-id='{modal.id}']", state="detached")
    deadline = time.monotonic() + 10
    while acked_at(modal.id) is None:
        assert time.monotonic() < deadline, "pressing the button did not acknowledge it"
        time.sleep(0.1)
