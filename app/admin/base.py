"""What every admin page shares: admins only, Flask-WTF CSRF on every form, UTC datetimes."""

import json
from datetime import UTC, datetime

from flask import abort, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.form import DateTimeField
from flask_admin.model import typefmt
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import Choice

from app.templating import utc_time


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


class UTCDateTimeField(DateTimeField):
    """Read and shown in UTC; our columns refuse naive datetimes."""

    def __init__(self, label=None, validators=None, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.description = self.description or "UTC, e.g. 2026-05-01 17:00:00"

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None:
            self.data = self.data.replace(tzinfo=UTC)

    def _value(self):
        if self.raw_data:
            return " ".join(self.raw_data)
        return self.data.astimezone(UTC).strftime(self.format[0]) if self.data else ""


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
