"""Composing a flash message to one person, a whole course or everyone; it arrives live."""

from urllib.parse import urlsplit

from flask import flash, redirect, request, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.admin.base import AdminView
from app.extensions import db
from app.flash import send_flash
from app.models import Course, Enrollment, User

AUDIENCES = [SelectChoice("user", "One person"), SelectChoice("course", "Everyone in a course"),
             SelectChoice("everyone", "Everyone")]
LEVELS = [SelectChoice("info", "Information"), SelectChoice("success", "Good news"),
          SelectChoice("warning", "Warning"), SelectChoice("error", "Problem")]


def _safe_link(form, field):
    if not field.data:
        return
    parts = urlsplit(field.data)
    if not (field.data.startswith("/") and not field.data.startswith("//")
            or parts.scheme in ("http", "https") and parts.netloc):
        raise ValidationError("Use a page on this site (/...) or an http(s) address.")


class FlashComposeForm(FlaskForm):
    audience = RadioField("Send to", choices=AUDIENCES, default="user")
    email = EmailField("Person's email", validators=[Optional()])
    course_id = SelectField("Course", coerce=int, validate_choice=False)
    text = TextAreaField("Message", validators=[DataRequired(), Length(max=1000)])
    level = SelectField("Kind", choices=LEVELS, default="info")
    link_url = StringField("Link address", validators=[Optional(), Length(max=500), _safe_link])
    link_text = StringField("Link text", validators=[Optional(), Length(max=100)])
    button_text = StringField("Button text", validators=[Optional(), Length(max=100)],
                              description="Shown on the dismiss button, e.g. \"Got it\".")
    modal = BooleanField("Show as a dialog the person must acknowledge")
    hide_after = IntegerField("Hide after (seconds)",
                              validators=[Optional(), NumberRange(min=1, max=3600)])


def recipients(form):
    """The user ids the message goes to, or a sentence saying why there are none."""
    if form.audience.data == "user":
        email = (form.email.data or "").strip().lower()
        if not email:
            return [], "Enter the email of the person to send it to."
        user = db.session.execute(
            db.select(User).filter_by(email=email, active=True)
        ).scalar_one_or_none()
        return ([user.id], None) if user else ([], f"No active user has the email {email!r}.")
    if form.audience.data == "course":
        ids = db.session.execute(
            db.select(Enrollment.user_id).join(User)
            .where(Enrollment.course_id == form.course_id.data, User.active.is_(True))
        ).scalars().all()
        return list(ids), None if ids else "Nobody is enrolled in that course."
    return list(db.session.execute(
        db.select(User.id).where(User.active.is_(True))
    ).scalars().all()), None


class FlashComposeView(AdminView):
    @expose("/", methods=["GET", "POST"])
    def index(self):
        form = FlashComposeForm()
        form.course_id.choices = [
            SelectChoice(str(course.id), f"{course.code}: {course.title}") for course in
            db.session.execute(db.select(Course).order_by(Course.code)).scalars()
        ]
        if form.validate_on_submit():
            user_ids, problem = recipients(form)
            if problem:
                flash(problem, "error")
            else:
                send_flash(
                    user_ids, form.text.data.strip(), level=form.level.data,
                    link_url=form.link_url.data or None, link_text=form.link_text.data or None,
                    button_text=form.button_text.data or None, modal=form.modal.data,
                    hide_after=form.hide_after.data,
                )
                db.session.commit()
                flash(f"Sent to {len(user_ids)} {'person' if len(user_ids) == 1 else 'people'}.",
                      "success")
                return redirect(url_for(".index"))
        status = 400 if request.method == "POST" else 200
        return self.render("admin/flash_compose.html", form=form), status
