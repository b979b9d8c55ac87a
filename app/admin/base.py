"""What every admin page shares: admins only, Flask-WTF CSRF on every form, UTC datetimes."""

import json
from datetime import datetime

from flask import abort, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.model import typefmt
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import Choice, DateTimeLocalField, ValidationError
from wtforms.widgets import DateTimeLocalInput

from app.grades.release import ReleaseError
from app.grades.times import course_time
from app.templating import utc_time


def counted(number, noun):
    """"1 message", "3 messages": a count in the words of an admin page's flash message."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class AdminOnly:
    def is_accessible(self):
        return current_user.is_authenticated and current_user.is_admin

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(403)


class AdminView(AdminOnly, BaseView):
    pass


class AdminHomeView(AdminOnly, AdminIndexView):
    pass


class AdminForm(FlaskForm):
    """Flask-Admin's forms on Flask-WTF, so the app-wide CSRF token protects them too."""

    def __init__(self, formdata=None, obj=None, prefix="", **kwargs):
        # Flask-Admin's Unique validator looks for the edited object here.
        self._obj = obj
        super().__init__(formdata=formdata, obj=obj, prefix=prefix, **kwargs)


class CourseTimeField(DateTimeLocalField):
    """A wall-clock time in the course's time zone, typed into the browser's own date-and-time
    input (no picker script to garble what is typed), kept as UTC. The view sets `tz` to show
    a stored time; a posted one is read in the zone of the course the form sets."""

    FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def __init__(self, label=None, validators=None, **kwargs):
        kwargs.pop("widget", None)
        kwargs.pop("format", None)
        super().__init__(label, validators, format=self.FORMATS, widget=DateTimeLocalInput(),
                         **kwargs)
        self.tz = None

    def _value(self):
        if self.raw_data:
            return " ".join(self.raw_data)
        if self.data is None:
            return ""
        shown = self.data.astimezone(self.tz) if self.data.tzinfo and self.tz else self.data
        return shown.strftime("%Y-%m-%dT%H:%M")

    def in_zone(self, tz):
        if self.data is None or self.data.tzinfo is not None:
            return self.data
        try:
            return course_time(self.data, tz)
        except ReleaseError as exc:
            raise ValidationError(str(exc)) from None

    def populate_obj(self, obj, name):
        setattr(obj, name, self.in_zone(obj.course.tz))


class RecordSelectField(QuerySelectField):
    """Flask-Admin's pick-a-row field, yielding the Choice objects WTForms 3.3 expects."""

    def iter_choices(self):
        if self.allow_blank:
            yield Choice("__None", self.blank_text, self.data is None, {})
        for pk, obj in self._get_object_list():
            yield Choice(pk, self.get_label(obj), obj == self.data, {})


def _datetime(view, value, name):
    return utc_time(value)


def _json(view, value, name):
    return Markup("<pre>{}</pre>").format(json.dumps(value, indent=2, sort_keys=True))


class AdminModelView(AdminOnly, ModelView):
    form_base_class = AdminForm
    page_size = 50
    can_view_details = True
    column_type_formatters = {**typefmt.BASE_FORMATTERS, datetime: _datetime}
    column_type_formatters_detail = {**typefmt.DETAIL_FORMATTERS, datetime: _datetime,
                                     dict: _json}
