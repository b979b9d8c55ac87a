"""Per-student extensions, for admins to look through: who granted each, when, and who ended it.
They are granted and withdrawn on the marking pages (or by the student-records system), which
tell the student; here they are read only."""

from flask_admin.contrib.sqla.filters import FilterEmpty, FilterEqual

from app.admin.base import AdminModelView
from app.models import EXTENSION_SOURCES, Extension
from app.templating import local_time


def _course_time(view, context, model, name):
    return local_time(getattr(model, name), model.assignment.course.tz)


class ExtensionView(AdminModelView):
    can_create = False
    can_edit = False
    can_delete = False
    column_list = ("assignment", "student.email", "due_at", "cutoff_at", "granted_by.email",
                   "granted_at", "source", "ended_at", "end_reason")
    column_labels = {"student.email": "Student", "due_at": "Due", "cutoff_at": "Cut-off",
                     "granted_by.email": "Granted by", "granted_at": "Granted",
                     "ended_at": "Ended", "end_reason": "Ended because",
                     "ended_by.email": "Ended by", "source_ref": "Records message",
                     "assignment.course.code": "Course"}
    column_details_list = column_list[:7] + ("source_ref", "decided_at", "reason",
                                             "ended_at", "ended_by.email", "end_reason")
    # Deadlines are the course's: shown in its time zone, as the student sees them.
    column_formatters = {"due_at": _course_time, "cutoff_at": _course_time}
    column_formatters_detail = column_formatters
    column_searchable_list = ("student.email", "reason")
    column_filters = (
        "assignment.course.code",
        FilterEqual(Extension.source, "Source", options=[(s, s) for s in EXTENSION_SOURCES]),
        FilterEmpty(Extension.ended_at, "Ended"),
    )
    column_default_sort = ("id", True)
