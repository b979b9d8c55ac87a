"""Marking pages for the staff of a course: marks, releases and per-student extensions. Anyone
else gets a 404, so nothing leaks."""

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import deadlines
from app.deadlines import ExtensionError, enrolled_student, extensions_of
from app.events.topics import assignment_staff_topic
from app.extensions import db
from app.grades import bp
from app.grades.forms import (
    CancelReleaseForm,
    ExtensionForm,
    GradeForm,
    ReleaseNowForm,
    ScheduleReleaseForm,
    WithdrawExtensionForm,
    WithdrawReleaseForm,
)
from app.grades.marking import marking_progress, marking_rows
from app.grades.marks import GradeError, NotMarkable, save_grade
from app.grades.release import (
    ReleaseError,
    cancel_release,
    release_now,
    release_state,
    schedule_release,
    withdraw_release,
)
from app.grades.times import course_time
from app.models import Assignment, Enrollment, User
from app.submissions.access import staff_assignment, staff_submission
from app.templating import local_time


def taught_assignments(user):
    query = select(Assignment).order_by(Assignment.due_at)
    if not user.is_admin:
        query = query.where(Assignment.course_id.in_(
            select(Enrollment.course_id).where(Enrollment.user_id == user.id,
                                               Enrollment.role == "staff")))
    return db.session.execute(query).scalars().all()


def grade_form_for(submission, from_request=False):
    grade = submission.grade
    # Each row has its own form; the prefix keeps field names and ids apart.
    if from_request:
        form = GradeForm(prefix=f"s{submission.id}")
    else:
        form = GradeForm(prefix=f"s{submission.id}", formdata=None)
        if grade is not None:
            form.score.data = f"{grade.score:g}"
            form.feedback.data = grade.feedback
    form.score.render_kw = {**form.score.render_kw, "max": submission.assignment.max_score}
    return form


def marking_page(assignment, failed=None, failed_form=None, schedule_form=None,
                 release_form=None, extension_form=None, extension_error=None, status=200):
    """The marking page; `failed` is a submission whose mark could not be saved, shown again."""
    rows = marking_rows(assignment)
    if extension_form is None:
        extension_form = ExtensionForm(formdata=None)
    extension_form.student_id.choices = [
        (row.student.id, f"{row.student.display_name} ({row.student.email})") for row in rows]
    forms = {
        row.submission.id: failed_form if row.submission.id == failed else
        grade_form_for(row.submission)
        for row in rows if row.submission is not None
    }
    if schedule_form is None:
        schedule_form = ScheduleReleaseForm(formdata=None)
        if assignment.release_at is not None:
            schedule_form.release_at.data = assignment.release_at.astimezone(
                assignment.course.tz).replace(tzinfo=None)
    return render_template(
        "grades/marking.html", assignment=assignment, rows=rows, forms=forms,
        progress=marking_progress(assignment.id), state=release_state(assignment),
        release_form=release_form or ReleaseNowForm(formdata=None),
        withdraw_form=WithdrawReleaseForm(), schedule_form=schedule_form,
        cancel_form=CancelReleaseForm(), staff_topic=assignment_staff_topic(assignment.id),
        extensions=extensions_of(assignment), extension_form=extension_form,
        extension_error=extension_error, withdraw_extension_form=WithdrawExtensionForm(),
    ), status


@bp.route("/")
@login_required
def index():
    teaches = any(e.role == "staff" for e in current_user.enrollments)
    if not teaches and not current_user.is_admin:
        abort(404)
    assignments = taught_assignments(current_user)
    return render_template(
        "grades/index.html", assignments=assignments,
        progress={a.id: marking_progress(a.id) for a in assignments},
        states={a.id: release_state(a) for a in assignments},
    )


@bp.route("/assignments/<int:assignment_id>")
@login_required
def marking(assignment_id):
    return marking_page(staff_assignment(assignment_id, current_user))


@bp.post("/submissions/<int:submission_id>/grade")
@login_required
def grade(submission_id):
    submission = staff_submission(submission_id, current_user)
    assignment = submission.assignment
    form = grade_form_for(submission, from_request=True)
    if not form.validate_on_submit():
        form.score.errors = ["Your session expired; please save again."]
        return marking_page(assignment, submission.id, form, status=400)
    try:
        saved = save_grade(submission, form.score.data, form.feedback.data, current_user)
    except NotMarkable:
        # The page was drawn before the student submitted again: their row now shows the new one.
        flash(f"{submission.student.display_name} has a newer submission; mark that one.",
              "error")
        return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)
    except GradeError as exc:
        form.score.errors = [str(exc)]
        return marking_page(assignment, submission.id, form, status=400)
    name = submission.student.display_name
    if saved.notified_at is not None:
        flash(f"Saved {name}'s mark; grades are out, so they see it now.", "success")
    else:
        flash(f"Saved {name}'s mark. Students see it when grades are released.", "success")
    return redirect(url_for("grades.marking", assignment_id=assignment.id,
                            _anchor=f"row-{submission.id}"), 303)


@bp.post("/assignments/<int:assignment_id>/release")
@login_required
def release(assignment_id):
    assignment = staff_assignment(assignment_id, current_user)
    form = ReleaseNowForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            flash("Your session expired; please try again.", "error")
            return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)
        return marking_page(assignment, release_form=form, status=400)
    else:
        try:
            released = release_now(assignment)
        except ReleaseError as exc:
            flash(str(exc), "error")
        else:
            flash("Releasing grades now: students are told in a moment." if released
                  else "Grades for this assignment are already released.",
                  "success" if released else "error")
    return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)


@bp.post("/assignments/<int:assignment_id>/release/withdraw")
@login_required
def withdraw(assignment_id):
    assignment = staff_assignment(assignment_id, current_user)
    if not WithdrawReleaseForm().validate_on_submit():
        flash("Your session expired; please try again.", "error")
    elif withdraw_release(assignment):
        flash("Grades withdrawn: students no longer see their marks. Emails already sent "
              "cannot be recalled.", "success")
    else:
        flash("Grades for this assignment were not released.", "error")
    return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)


@bp.post("/assignments/<int:assignment_id>/release/schedule")
@login_required
def schedule(assignment_id):
    assignment = staff_assignment(assignment_id, current_user)
    form = ScheduleReleaseForm()
    if not form.validate_on_submit():
        return marking_page(assignment, schedule_form=form, status=400)
    try:
        at = course_time(form.release_at.data, assignment.course.tz)
        schedule_release(assignment, at)
    except ReleaseError as exc:
        form.release_at.errors = [str(exc)]
        return marking_page(assignment, schedule_form=form, status=400)
    flash("Release scheduled.", "success")
    return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)


@bp.post("/assignments/<int:assignment_id>/release/cancel")
@login_required
def cancel(assignment_id):
    assignment = staff_assignment(assignment_id, current_user)
    if not CancelReleaseForm().validate_on_submit():
        flash("Your session expired; please try again.", "error")
    else:
        try:
            cancelled = cancel_release(assignment)
        except ReleaseError as exc:
            flash(str(exc), "error")
        else:
            flash("Scheduled release cancelled." if cancelled else "No release was scheduled.",
                  "success")
    return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)


def _deadline_words(extension, tz):
    closes = (f", closing {local_time(extension.cutoff_at, tz)}" if extension.cutoff_at
              else "")
    return f"due {local_time(extension.due_at, tz)}{closes}"


@bp.post("/assignments/<int:assignment_id>/extensions")
@login_required
def grant_extension(assignment_id):
    assignment = staff_assignment(assignment_id, current_user)
    form = ExtensionForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            flash("Your session expired; please try again.", "error")
            return redirect(url_for("grades.marking", assignment_id=assignment.id), 303)
        return marking_page(assignment, extension_form=form, status=400)
    tz = assignment.course.tz
    try:
        due_at = course_time(form.due_at.data, tz)
        cutoff_at = course_time(form.cutoff_at.data, tz) if form.cutoff_at.data else None
        student = enrolled_student(assignment, form.student_id.data)
        extension, _ = deadlines.grant_extension(assignment, student, due_at, cutoff_at,
                                                 granted_by=current_user,
                                                 reason=form.reason.data)
        db.session.commit()
    except (ReleaseError, ExtensionError) as exc:
        db.session.rollback()
        return marking_page(assignment, extension_form=form, extension_error=str(exc),
                            status=400)
    except IntegrityError:
        # Two grants for one student at the same moment: one grant stays in force.
        db.session.rollback()
        flash("Someone else changed this student's extension at the same moment; check it "
              "below and try again if needed.", "error")
        return redirect(url_for("grades.marking", assignment_id=assignment.id,
                                _anchor="extensions"), 303)
    flash(f"Extension granted to {student.display_name}: {_deadline_words(extension, tz)}. "
          "They have been told.", "success")
    return redirect(url_for("grades.marking", assignment_id=assignment.id,
                            _anchor="extensions"), 303)


@bp.post("/assignments/<int:assignment_id>/extensions/<int:student_id>/withdraw")
@login_required
def withdraw_extension(assignment_id, student_id):
    assignment = staff_assignment(assignment_id, current_user)
    student = db.session.get(User, student_id)
    if not WithdrawExtensionForm().validate_on_submit():
        flash("Your session expired; please try again.", "error")
    elif student is None or deadlines.withdraw_extension(assignment, student,
                                                         current_user) is None:
        flash("That student has no extension on this assignment.", "error")
    else:
        db.session.commit()
        tz = assignment.course.tz
        flash(f"Extension withdrawn: {student.display_name} is due "
              f"{local_time(assignment.due_at, tz)} again, like everyone else.", "success")
    return redirect(url_for("grades.marking", assignment_id=assignment.id,
                            _anchor="extensions"), 303)
