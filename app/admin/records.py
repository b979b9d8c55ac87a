"""Admin pages over the database tables: people, courses, assignments, submissions (with their
steps and event timeline), grades, flash messages and the email outbox."""

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import flash, redirect, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import FilterEmpty, FilterEqual
from markupsafe import Markup
from wtforms import PasswordField, SelectChoice, SelectField, ValidationError
from wtforms.validators import Optional

from app.admin.base import AdminModelView, CourseTimeField, RecordSelectField, counted
from app.extensions import db
from app.grades.release import ReleaseError, cancel_release, schedule_release
from app.models import (
    ROLES,
    SUBMISSION_STATUSES,
    Assignment,
    Course,
    Enrollment,
    Event,
    ExternalRecord,
    FlashMessage,
    Grade,
    OutboxEmail,
    StepRun,
    Submission,
    User,
    utcnow,
)
from app.pipeline import requeue_step
from app.steps import STEP_BY_NAME
from app.submissions.requeue import requeue_answer
from app.templating import local_time

MIN_PASSWORD = 8


def _rows(model, order):
    return {"query_factory": lambda: db.session.execute(
        db.select(model).order_by(order)).scalars().all()}


def _choices(names):
    return [SelectChoice(name, name.title()) for name in names]


class UserView(AdminModelView):
    # Users are deactivated, not deleted: their submissions and grades must stay.
    can_delete = False
    column_list = ("email", "name", "role", "active", "created_at")
    column_details_list = ("email", "name", "role", "active", "created_at")
    column_searchable_list = ("email", "name")
    column_filters = ("role", "active")
    column_default_sort = "email"
    form_columns = ("email", "name", "role", "active", "password")
    form_overrides = {"role": SelectField}
    form_args = {"role": {"choices": _choices(ROLES)}}
    form_extra_fields = {
        "password": PasswordField(
            "Password", validators=[Optional()],
            description="Set a new password; leave empty to keep the current one.",
        ),
    }

    def on_model_change(self, form, model, is_created):
        model.email = model.email.strip().lower()
        password = form.password.data or ""
        if is_created and not password:
            raise ValidationError("Give the new user a password.")
        if password:
            if len(password) < MIN_PASSWORD:
                raise ValidationError(f"Passwords need at least {MIN_PASSWORD} characters.")
            model.set_password(password)


class CourseView(AdminModelView):
    can_delete = False
    column_list = ("code", "title", "timezone")
    column_searchable_list = ("code", "title")
    form_columns = ("code", "title", "timezone")

    def on_model_change(self, form, model, is_created):
        try:
            ZoneInfo(model.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(
                f"Unknown time zone {model.timezone!r}; use a name like Europe/London."
            ) from None


class EnrollmentView(AdminModelView):
    column_list = ("user.email", "user.name", "course", "role")
    column_labels = {"user.email": "Email", "user.name": "Name"}
    column_searchable_list = ("user.email", "user.name")
    column_filters = ("role", FilterEqual(Course.code, "Course"))
    form_columns = ("user", "course", "role")
    form_overrides = {"user": RecordSelectField, "course": RecordSelectField,
                      "role": SelectField}
    form_args = {"user": {**_rows(User, User.email), "get_label": "email"},
                 "course": _rows(Course, Course.code),
                 "role": {"choices": _choices(("student", "staff"))}}


class AssignmentView(AdminModelView):
    can_delete = False
    column_list = ("course", "title", "due_at", "cutoff_at", "allowed_types", "max_size_mb",
                   "max_score", "release_at", "released_at")
    column_labels = {"due_at": "Due", "cutoff_at": "Cut-off",
                     "max_size_mb": "Max MB", "release_at": "Grade release",
                     "released_at": "Released"}
    # Deadlines are the course's: shown in its time zone, as students see them.
    column_formatters = {name: lambda view, context, model, name: local_time(
        getattr(model, name), model.course.tz) for name in ("due_at", "cutoff_at", "release_at")}
    column_searchable_list = ("title",)
    column_filters = (FilterEqual(Course.code, "Course"),)
    column_default_sort = ("due_at", True)
    form_columns = ("course", "title", "description", "due_at", "cutoff_at", "allowed_types",
                    "max_size_mb", "max_score", "grade_release")
    form_overrides = {"course": RecordSelectField, "due_at": CourseTimeField,
                      "cutoff_at": CourseTimeField}
    form_args = {"course": _rows(Course, Course.code),
                 "due_at": {"description": "In the course's time zone"},
                 "cutoff_at": {"description": "In the course's time zone; empty for none"},
                 "allowed_types": {"description": "Comma-separated extensions, e.g. pdf,docx,txt"}}
    form_extra_fields = {
        "grade_release": CourseTimeField(
            "Grade release", validators=[Optional()],
            description="In the course's time zone: when students see their grades; leave "
                        "empty for no scheduled release.",
        ),
    }

    def on_form_prefill(self, form, id):
        assignment = db.session.get(Assignment, id)
        for field in (form.due_at, form.cutoff_at, form.grade_release):
            field.tz = assignment.course.tz
        form.grade_release.data = assignment.release_at

    def on_model_change(self, form, model, is_created):
        if model.cutoff_at is not None and model.cutoff_at < model.due_at:
            raise ValidationError("The cut-off cannot be before the due time.")
        if not model.allowed_extensions:
            raise ValidationError("Allow at least one file type.")
        if model.max_size_mb < 1 or model.max_score < 1:
            raise ValidationError("Size limit and maximum score must be at least 1.")
        wanted = form.grade_release.in_zone(model.course.tz)
        if wanted is not None and wanted != model.release_at and wanted <= utcnow():
            raise ValidationError("Choose a grade release time in the future.")

    def after_model_change(self, form, model, is_created):
        # Releases go through the grades module, which owns the job that performs them.
        wanted = form.grade_release.in_zone(model.course.tz)
        try:
            if wanted is None and model.release_at is not None and model.released_at is None:
                cancel_release(model)
                flash("The scheduled grade release was cancelled.", "info")
            elif wanted is not None and wanted != model.release_at:
                schedule_release(model, wanted)
                flash(f"Grades will be released at {local_time(wanted, model.course.tz)}.",
                      "success")
        except ReleaseError as exc:
            flash(str(exc), "error")


class SubmissionView(AdminModelView):
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("id", "assignment", "student.email", "filename", "status", "received_at",
                   "late", "similarity")
    column_labels = {"id": "Receipt", "student.email": "Student"}
    column_searchable_list = ("filename", "sha256", "student.email")
    column_filters = (
        FilterEqual(Submission.status, "Status",
                    options=[(s, s.replace("_", " ")) for s in SUBMISSION_STATUSES]),
        "late",
    )
    column_default_sort = ("id", True)
    column_details_list = ("id", "assignment", "student.email", "filename", "content_type",
                           "size", "sha256", "received_at", "late", "status", "status_detail",
                           "idempotency_key", "stored_path", "similarity")
    details_template = "admin/submission_details.html"

    def timeline(self, submission):
        return db.session.execute(
            db.select(Event).filter_by(submission_id=submission.id).order_by(Event.id)
        ).scalars().all()

    def step_title(self, step_run):
        return STEP_BY_NAME[step_run.name].title

    def outside_records(self, submission):
        """What Turnitin and the student-records system acknowledged, to square ours with
        theirs: (service, their id, state, note)."""
        names = {"turnitin": "Turnitin", "admin_sync": "Student records"}
        rows = db.session.execute(
            db.select(ExternalRecord).filter_by(submission_id=submission.id)
            .order_by(ExternalRecord.service)
        ).scalars().all()
        for record in rows:
            unconfirmed = (record.data or {}).get("unconfirmed_creates", 0)
            note = (f"Turnitin may also hold {counted(unconfirmed, 'empty submission')} for this "
                    "work, from tries whose answer never arrived" if unconfirmed else "")
            yield (names.get(record.service, record.service), record.remote_id or "",
                   record.state, note)

    @action("requeue_failed", "Requeue failed steps",
            "Send every failed step of the selected submissions back to the workers?")
    def requeue_failed(self, ids):
        """After an outage or a refused key is put right: every failed step at once. A rejected
        file's scan stays as it is: the rejection is final."""
        failed = db.session.execute(
            db.select(StepRun).join(Submission)
            .where(StepRun.submission_id.in_([int(i) for i in ids]), StepRun.status == "failed",
                   Submission.status != "rejected")
            .order_by(StepRun.submission_id, StepRun.position)
        ).scalars().all()
        requeued, unqueued = [], 0
        for step_run in failed:
            outcome = requeue_step(step_run)
            if outcome.requeued:
                requeued.append(step_run.submission_id)
                unqueued += not outcome.enqueued
        if not requeued:
            flash("None of the selected submissions has a failed step that can run again.",
                  "warning")
            return
        flash(f"Requeued {counted(len(requeued), 'failed step')} of "
              f"{counted(len(set(requeued)), 'submission')}.", "success")
        if unqueued:
            flash(f"The queue is unreachable right now: {counted(unqueued, 'step')} will start "
                  "within a minute of it coming back.", "warning")

    @expose("/requeue/<int:step_id>", methods=["POST"])
    def requeue(self, step_id):
        step_run = db.get_or_404(StepRun, step_id)
        kind, sentence = requeue_answer(step_run, requeue_step(step_run))
        flash(sentence, {"requeued": "success", "later": "warning"}.get(kind, "error"))
        return redirect(url_for(".details_view", id=step_run.submission_id))


class GradeView(AdminModelView):
    # Marks are given and released on the staff pages, which tell the students.
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("submission.id", "submission.assignment", "submission.student.email",
                   "score", "marker.email", "updated_at", "notified_at")
    column_labels = {"submission.id": "Receipt", "submission.assignment": "Assignment",
                     "submission.student.email": "Student", "marker.email": "Marker",
                     "notified_at": "Student told"}
    column_details_list = column_list[:4] + ("feedback",) + column_list[4:]
    column_default_sort = ("updated_at", True)


class FlashMessageView(AdminModelView):
    # Messages are sent from "Send a flash message", which also delivers them live.
    can_create = False
    can_edit = False
    column_list = ("user.email", "text", "level", "modal", "created_at", "acked_at")
    column_labels = {"user.email": "To", "acked_at": "Acknowledged"}
    column_searchable_list = ("text", "user.email")
    column_filters = ("level", FilterEmpty(FlashMessage.acked_at, "Acknowledged at"))
    column_default_sort = ("id", True)


class OutboxEmailView(AdminModelView):
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("to", "subject", "created_at", "sent_at", "transport")
    column_searchable_list = ("to", "subject", "dedupe_key")
    column_filters = ("transport", FilterEmpty(OutboxEmail.sent_at, "Sent at"))
    column_default_sort = ("id", True)
    column_details_list = ("to", "subject", "dedupe_key", "message_id", "created_at",
                           "sent_at", "transport", "body")
    column_formatters_detail = {
        "body": lambda view, context, model, name: Markup("<pre>{}</pre>").format(model.body),
    }


def model_views():
    return [
        UserView(User, db, name="Users", category="People"),
        EnrollmentView(Enrollment, db, name="Enrollments", category="People"),
        CourseView(Course, db, name="Courses", category="Teaching"),
        AssignmentView(Assignment, db, name="Assignments", category="Teaching"),
        GradeView(Grade, db, name="Grades", category="Teaching"),
        SubmissionView(Submission, db, name="Submissions"),
        FlashMessageView(FlashMessage, db, name="Flash messages",
                         category="Messages"),
        OutboxEmailView(OutboxEmail, db, name="Email outbox", category="Messages"),
    ]

