import io

import pytest
from PIL import Image

from app.extensions import db
from app.models import Submission
from tests import samples
from tests.conftest import Auth, run_jobs
from tests.helpers import fetch, logged_in, upload_api


@pytest.fixture(autouse=True)
def built_in_scanner(app, client):
    # Requesting `client` also gives every app.test_client() the suite's request isolation.
    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)


def processed(app, world, content, filename, student="alice@uni.test"):
    api = app.test_client()
    response = upload_api(api, Auth(api).token(student), world.essay.id, content, filename)
    assert response.status_code == 202, response.get_json()
    run_jobs()
    return db.session.get(Submission, response.get_json()["id"])


def thumbnail_of(app, submission, email="alice@uni.test"):
    response = fetch(logged_in(app, email), f"/submissions/{submission.id}/thumbnail")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "PNG"
    return image.convert("RGB")


def near(pixel, color, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=True))


def test_png_preview_keeps_its_shape_and_colour(app, world):
    submission = processed(app, world, samples.png(640, 480), "diagram.png")
    assert submission.status == "completed"
    assert submission.step("thumbnail").detail == "Preview ready (image)"
    image = thumbnail_of(app, submission)
    assert image.size == (320, 240)
    assert near(image.getpixel((160, 120)), samples.RED)


def test_transparent_png_is_drawn_on_white(app, world):
    image = thumbnail_of(app, processed(app, world, samples.transparent_png(), "logo.png"))
    assert image.getpixel((50, 50)) == (255, 255, 255)


def test_jpeg_preview_honours_the_exif_orientation(app, world):
    # Stored landscape, red left and blue right; Orientation 6 means "turn 90° clockwise".
    photo = samples.jpeg_with_orientation(400, 200, orientation=6)
    image = thumbnail_of(app, processed(app, world, photo, "photo.jpg"))
    assert image.size == (160, 320)
    assert near(image.getpixel((80, 40)), samples.RED)
    assert near(image.getpixel((80, 280)), samples.BLUE)


def test_pdf_preview_is_its_first_page(app, world):
    document = samples.pdf(samples.RED, samples.BLUE, page_size=(300, 400))
    submission = processed(app, world, document, "report.pdf")
    assert submission.step("thumbnail").detail == "Preview ready (first page)"
    image = thumbnail_of(app, submission)
    assert image.size == (240, 320)
    assert near(image.getpixel((120, 160)), samples.RED)


def test_source_code_preview_draws_its_first_lines(app, world):
    source = b"def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([1, 2, 3]))\n"
    submission = processed(app, world, source, "stats.py")
    assert submission.step("thumbnail").detail == "Preview ready (text)"
    image = thumbnail_of(app, submission).convert("L")
    assert image.size == (320, 320)
    top, bottom = image.crop((0, 0, 320, 60)), image.crop((0, 80, 320, 320))
    assert top.getextrema()[0] < 100  # dark strokes where the lines are written
    assert bottom.getextrema() == (255, 255)  # four lines leave the rest blank


def test_other_types_get_an_icon(app, world):
    document = samples.zip_of({"word/document.xml": b"<w:document/>"})
    submission = processed(app, world, document, "essay.docx")
    assert submission.status == "completed"
    assert submission.step("thumbnail").detail == "Preview ready (type icon)"
    assert thumbnail_of(app, submission).size == (320, 320)


@pytest.mark.parametrize("side", [
    12000,  # over our limit, and inside the band where Pillow only warns
    pytest.param(20000, marks=pytest.mark.slow),  # past twice Pillow's limit, where it refuses
])
def test_decompression_bomb_image_gets_no_preview_and_the_submission_completes(app, world, side):
    submission = processed(app, world, samples.png_bomb(side, side), "huge.png")
    step = submission.step("thumbnail")
    assert submission.status == "completed"
    assert (step.status, step.attempts) == ("skipped", 1)
    reason = f"the image is {side:,} × {side:,} pixels, more than the 50 megapixels"
    assert step.detail == f"No preview: {reason} a preview may draw."
    owner = logged_in(app, "alice@uni.test")
    assert fetch(owner, f"/submissions/{submission.id}/thumbnail").status_code == 404
    assert fetch(owner, f"/submissions/{submission.id}/file").status_code == 200
    page = owner.get(f"/submissions/{submission.id}").get_data(as_text=True)
    assert reason in page


def test_corrupt_pdf_gets_a_plain_reason_once_not_a_retry_loop(app, world):
    submission = processed(app, world, samples.corrupt_pdf(), "broken.pdf")
    step = submission.step("thumbnail")
    assert submission.status == "completed"
    assert (step.status, step.attempts) == ("skipped", 1)
    assert step.detail.startswith(
        "No preview: the PDF could not be opened: it is damaged or not really a PDF")
    assert "check that it opens on your computer" in step.detail
    api = app.test_client()
    view = api.get(f"/api/v1/submissions/{submission.id}",
                   headers=Auth(api).token("alice@uni.test")).get_json()
    assert view["thumbnail_url"] is None


def test_thumbnail_is_for_the_owner_and_the_courses_staff_only(app, client, world):
    submission = processed(app, world, samples.png(), "diagram.png")
    url = f"/submissions/{submission.id}/thumbnail"
    assert thumbnail_of(app, submission, "alice@uni.test").size == (320, 240)
    assert thumbnail_of(app, submission, "sam@uni.test").size == (320, 240)
    assert fetch(logged_in(app, "bob@uni.test"), url).status_code == 404
    assert fetch(logged_in(app, "tess@uni.test"), url).status_code == 404
    assert fetch(logged_in(app, "carol@uni.test"), url).status_code == 404
    anonymous = fetch(client, url)
    assert anonymous.status_code == 302
    assert "/login" in anonymous.headers["Location"]
