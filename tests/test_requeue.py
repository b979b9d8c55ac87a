"""Staff put a failed step back to work from four places: the submission's own page, its admin
page, the admin list's "Requeue failed steps" action and the queues page. Each ends the same way:
the step runs again, and RQ keeps no failed job of it, so neither the queues page nor the
failed-jobs metric reports a failure that is over. With Redis away, the step waits queued in the
database and the reconciler hands it to Redis once it is back."""

import re
from contextlib import contextmanager

import pytest
from rq.registry import FailedJobRegistry

from app.extensions import db, get_redis
from app.models import StepRun, Submission
from jobs.maintenance import reconcile
from tests.conftest import csrf_from, run_jobs
from tests.helpers import logged_in, paused
from tests.test_admin import RecordsSystem, failed_admin_sync

UNREACHABLE = ("Student records was requeued; the queue is unreachable right now, so it will "
               "start within a minute of it coming back.")


def on_submission_page(app, failed):
    staff = logged_in(app, "sam@uni.test")
    page = staff.get(f"/submissions/{failed.submission_id}").get_data(as_text=True)
    return staff, staff.post(f"/submissions/{failed.submission_id}/steps/admin_sync/requeue",
                             data={"csrf_token": csrf_from(page)})


def on_admin_page(app, failed):
    admin = logged_in(app, "root@uni.test")
    page = admin.get(f"/admin/submission/details/?id={failed.submission_id}").get_data(
        as_text=True)
    return admin, admin.post(f"/admin/submission/requeue/{failed.step_id}",
                             data={"csrf_token": csrf_from(page)})


def from_admin_list(app, failed):
    admin = logged_in(app, "root@uni.test")
    page = admin.get("/admin/submission/").get_data(as_text=True)
    return admin, admin.post("/admin/submission/action/", data={
        "csrf_token": csrf_from(page), "action": "requeue_failed",
        "rowid": [str(failed.submission_id)]})


def on_queues_page(app, failed):
    admin = logged_in(app, "root@uni.test")
    page = admin.get("/admin/queues/").get_data(as_text=True)
    assert f'id="failed-{failed.job_id}"' in page
    return admin, admin.post(f"/admin/queues/failed/{failed.job_id}/requeue",
                             data={"csrf_token": csrf_from(page)})


REQUEUE_FROM = {
    "submission page": (on_submission_page, "Student records was requeued."),
    "admin page": (on_admin_page, "Student records was requeued."),
    "admin list": (from_admin_list, "Requeued 1 failed step of 1 submission."),
    "queues page": (on_queues_page, "Requeued step admin_sync of submission {id}"),
}


def requeue(app, failed, place):
    """Requeue the failed step from `place` as staff would; the page they are sent back to."""
    requeue_from, _ = REQUEUE_FROM[place]
    viewer, response = requeue_from(app, failed)
    assert response.status_code in (302, 303), response.status_code
    return viewer.get(response.headers["Location"]).get_data(as_text=True)


def assert_no_failure_reported(app):
    assert FailedJobRegistry("external", connection=get_redis()).count == 0
    admin = logged_in(app, "root@uni.test")
    page = admin.get("/admin/queues/").get_data(as_text=True)
    assert re.search(r'id="queue-external" data-depth="0" data-failed="0"', page)
    assert "No failed jobs." in page
    metrics = admin.get("/metrics").get_data(as_text=True)
    assert 'submissions_queue_failed_jobs{queue="external"} 0' in metrics


def assert_completed_once(failed, records):
    assert [r["submission_id"] for r in records.received] == [failed.submission_id]
    db.session.remove()
    submission = db.session.get(Submission, failed.submission_id)
    assert (submission.status, submission.step("admin_sync").status) == (
        "completed", "succeeded")


@pytest.mark.parametrize("place", list(REQUEUE_FROM))
def test_requeued_step_runs_and_no_failed_job_of_it_stays_behind(app, world, place):
    failed = failed_admin_sync(app, world)
    assert FailedJobRegistry("external", connection=get_redis()).count == 1

    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        shown = requeue(app, failed, place)
        assert REQUEUE_FROM[place][1].format(id=failed.submission_id) in shown
        run_jobs()

    assert_completed_once(failed, records)
    assert_no_failure_reported(app)


def test_step_that_failed_again_after_a_requeue_leaves_no_failed_job_once_it_runs(app, world):
    failed = failed_admin_sync(app, world)
    requeue(app, failed, "submission page")
    run_jobs()  # the records system is still away: the step fails again, in a new job
    db.session.remove()
    assert db.session.get(StepRun, failed.step_id).status == "failed"

    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        requeue(app, failed, "admin page")
        run_jobs()

    assert_completed_once(failed, records)
    assert_no_failure_reported(app)


@contextmanager
def redis_away(server, how):
    if how == "hung":
        with paused(server.process):
            yield
    else:
        server.stop()
        try:
            yield
        finally:
            server.start()  # empty, as a restarted Redis without persistence comes back


@pytest.mark.parametrize("place, how, told", [
    ("admin page", "stopped", [UNREACHABLE]),
    ("admin page", "hung", [UNREACHABLE]),
    ("submission page", "hung", [UNREACHABLE]),
    ("admin list", "hung", ["Requeued 1 failed step of 1 submission.",
                            "The queue is unreachable right now: 1 step will start within a "
                            "minute of it coming back."]),
])
def test_requeue_while_redis_is_away_starts_the_step_once_the_reconciler_finds_it_back(
        app, world, private_redis, place, how, told):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash answers 500, as it would in production
    failed = failed_admin_sync(app, world)

    with redis_away(private_redis, how):
        shown = requeue(app, failed, place)
    for sentence in told:
        assert sentence in shown
    db.session.remove()
    assert db.session.get(StepRun, failed.step_id).status == "queued"

    app.config["RECONCILE_GRACE_SECONDS"] = 0
    with RecordsSystem() as records:
        app.config["ADMIN_SYNC_URL"] = records.url
        assert reconcile()["requeued"] == 1
        run_jobs()

    assert_completed_once(failed, records)
    assert_no_failure_reported(app)
