"""Admin pages for running the service: the live dashboard (the admin home page) and the
queues page with its requeue and delete actions on failed jobs."""

from flask import flash, redirect, url_for
from flask_admin import expose
from rq.exceptions import NoSuchJobError

from app.admin.base import AdminHomeView, AdminView
from app.events.topics import ADMIN_DASHBOARD
from app.extensions import get_redis
from app.models import utcnow
from app.ops import dashboard, queues


class DashboardView(AdminHomeView):
    @expose("/")
    def index(self):
        return self.render("admin/dashboard.html", stats=dashboard.latest_stats(get_redis()),
                           topic=ADMIN_DASHBOARD)


class QueuesView(AdminView):
    @expose("/")
    def index(self):
        redis = get_redis()
        return self.render(
            "admin/queues.html",
            now=utcnow(),
            states=queues.queue_states(redis),
            workers=queues.workers(redis),
            scheduled=queues.scheduled_jobs(redis),
            failed=queues.failed_jobs(redis),
        )

    @expose("/failed/<job_id>/requeue", methods=["POST"])
    def requeue(self, job_id):
        return self._act(queues.requeue_failed_job, job_id)

    @expose("/failed/<job_id>/delete", methods=["POST"])
    def delete(self, job_id):
        return self._act(queues.delete_failed_job, job_id)

    def _act(self, action, job_id):
        try:
            flash(action(job_id, get_redis()), "success")
        except NoSuchJobError:
            flash("That job is gone already (finished, requeued or expired).", "warning")
        return redirect(url_for(".index"))
