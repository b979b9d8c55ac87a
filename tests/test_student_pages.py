"""Small things a student meets on their pages: a .jpeg accepted where .jpg is, a labelled
file input, a skip link, how long is left before the due time, and no "Open" once it passed."""

import re
from datetime import timedelta

from app.extensions import db
from app.models import utcnow
from tests.helpers import logged_in, upload_form

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64


def test_a_jpeg_is_accepted_where_jpg_files_are(app, world):
    alice = logged_in(app, "alice@uni.test")
    response = upload_form(alice, world.essay.id, JPEG, "photo.jpeg")
    assert response.status_code == 303, response.get_data(as_text=True)
    page = alice.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert ".jpg,.jpeg" in page


def test_the_file_input_has_a_label_and_every_page_a_skip_link(app, world):
    alice = logged_in(app, "alice@uni.test")
    page = alice.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert re.search(r'<label for="file">[^<]+</label>', page)
    for url in ("/", f"/assignments/{world.essay.id}"):
        page = alice.get(url).get_data(as_text=True)
        assert '<a class="skip" href="#main">Skip to content</a>' in page
        assert '<main id="main"' in page


def test_time_left_is_shown_and_a_passed_due_time_is_not_open(app, world):
    world.essay.due_at = utcnow() + timedelta(hours=5, minutes=30)
    db.session.commit()
    alice = logged_in(app, "alice@uni.test")
    page = alice.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert re.search(r'id="countdown"[^>]*>Due in 5 hours (29|30) minutes<', page)
    assert '<span class="badge open">Open</span>' in alice.get("/").get_data(as_text=True)

    world.essay.due_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    index = alice.get("/").get_data(as_text=True)
    assert '<span class="badge open">Open</span>' not in index
    assert '<span class="badge late">Past due: late until' in index
    page = alice.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    assert re.search(r'id="countdown"[^>]*>The due time passed 1 hour ago', page)
