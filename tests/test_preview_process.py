"""Previews are drawn in a child process the worker keeps: a drawing that overruns is stopped by
killing that child, and nothing the worker's stop signal or death does leaves a preview half
drawn or a child behind."""

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from app.services import thumbnails
from app.services.preview_process import PreviewProcess, PreviewTimeout
from tests.conftest import ROOT

# 49 megapixels, just under the preview limit: decoding it takes most of a second here.
SLOW_SIDE = 7000


@pytest.fixture
def previews():
    process = PreviewProcess()
    yield process
    process.stop()


@pytest.fixture
def slow_png(tmp_path):
    path = tmp_path / "large.png"
    Image.new("RGB", (SLOW_SIDE, SLOW_SIDE), "red").save(path, compress_level=1)
    return path


def small_png(tmp_path, colour="blue"):
    path = tmp_path / f"{colour}.png"
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def gone(pid, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child of this process lingers as a zombie until it is reaped.
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_preview_is_drawn_in_a_kept_child_process(previews, tmp_path):
    first = previews.render(small_png(tmp_path), "image/png", "a.png", tmp_path / "a-out.png",
                            timeout=30)
    child = previews.process.pid
    second = previews.render(small_png(tmp_path, "green"), "image/png", "b.png",
                             tmp_path / "b-out.png", timeout=30)
    assert (first, second) == ("image", "image")
    assert previews.process.pid == child != os.getpid()
    with Image.open(tmp_path / "b-out.png") as drawn:
        assert drawn.format == "PNG"
        assert drawn.convert("RGB").getpixel((drawn.width // 2, drawn.height // 2)) == (0, 128, 0)


def test_a_drawing_that_overruns_is_stopped_and_the_next_preview_gets_a_new_child(
        previews, slow_png, tmp_path):
    previews.render(small_png(tmp_path), "image/png", "a.png", tmp_path / "a-out.png", timeout=30)
    stuck = previews.process.pid

    started = time.monotonic()
    with pytest.raises(PreviewTimeout, match="took over 0.2 s"):
        previews.render(slow_png, "image/png", "large.png", tmp_path / "large-out.png",
                        timeout=0.2)
    assert time.monotonic() - started < 5
    assert gone(stuck), "the child stuck drawing was left running"
    assert not (tmp_path / "large-out.png").exists()

    assert previews.render(small_png(tmp_path), "image/png", "c.png", tmp_path / "c-out.png",
                           timeout=30) == "image"
    assert previews.process.pid != stuck


def test_a_file_that_cannot_be_previewed_says_why_from_the_child(previews, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really\n")
    with pytest.raises(thumbnails.NoPreview, match="damaged or not really a PDF"):
        previews.render(broken, "application/pdf", "broken.pdf", tmp_path / "out.png",
                        timeout=30)


def test_the_workers_stop_signal_lets_the_child_finish_its_preview(previews, slow_png, tmp_path):
    previews.render(small_png(tmp_path), "image/png", "a.png", tmp_path / "a-out.png", timeout=30)
    child = previews.process.pid
    # Heroku's stop signal reaches every process of the dyno, the child too.
    os.kill(child, signal.SIGTERM)
    assert previews.render(slow_png, "image/png", "large.png", tmp_path / "large-out.png",
                           timeout=60) == "image"
    assert previews.process.pid == child


def test_the_child_is_replaced_after_its_share_of_previews(tmp_path):
    previews = PreviewProcess(renders_per_process=2)
    try:
        pids = []
        for index in range(3):
            previews.render(small_png(tmp_path), "image/png", "a.png",
                            tmp_path / f"out{index}.png", timeout=30)
            pids.append(previews.process.pid if previews.process else None)
        # After the second preview the child is gone; the third starts a new one.
        assert pids[1] is None and pids[0] != pids[2]
    finally:
        previews.stop()


def test_the_child_ends_when_its_worker_is_killed(tmp_path):
    script = (
        "import sys, time\n"
        "from app.services.preview_process import PreviewProcess\n"
        "previews = PreviewProcess()\n"
        f"previews.render({str(small_png(tmp_path))!r}, 'image/png', 'a.png', "
        f"{str(tmp_path / 'out.png')!r}, timeout=30)\n"
        "print(previews.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(worker.stdout.readline())
        worker.kill()
        worker.wait(10)
        assert gone(child), "the preview child outlived its worker"
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()


def test_a_preview_that_overruns_in_the_pipeline_is_tried_again_then_staff_see_why(
        app, world, slow_png, monkeypatch):
    from app.extensions import db
    from app.models import StepRun
    from jobs import thumbnail
    from tests.conftest import Auth, run_jobs
    from tests.helpers import upload_api

    app.config.update(CLAMD_SOCKET=None, CLAMD_URL=None)
    monkeypatch.setattr(thumbnail, "DRAW_SECONDS", 0.2)
    api = app.test_client()
    response = upload_api(api, Auth(api).token("alice@uni.test"), world.essay.id,
                          slow_png.read_bytes(), "large.png")
    assert response.status_code == 202, response.get_json()
    run_jobs()
    step = db.session.execute(db.select(StepRun).filter_by(
        submission_id=response.get_json()["id"], name="thumbnail")).scalar_one()
    # The suite retries at once: every attempt overran.
    assert (step.status, step.attempts) == ("failed", 4)
    assert step.detail == "Gave up after 4 attempts; staff have been alerted"
    assert "took over 0.2 s; it was stopped" in step.last_error
