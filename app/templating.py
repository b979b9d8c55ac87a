from datetime import UTC

from flask_wtf.csrf import generate_csrf

from app.events.topics import submission_topic, user_topic
from app.models import utcnow
from app.steps import STEP_BY_NAME
from app.wording import student_step_detail, student_submission_detail


def local_time(dt, tz):
    if dt is None:
        return ""
    return dt.astimezone(tz).strftime("%a %d %b %Y, %H:%M %Z")


def utc_time(dt):
    if dt is None:
        return ""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds):
    """A duration as a person says it: its two largest units ("5 hours 29 minutes")."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    parts = []
    for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
        count, minutes = divmod(minutes, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])


def time_left(due, now=None):
    seconds = (due - (now or utcnow())).total_seconds()
    if seconds > 0:
        return f"Due in {span(seconds)}"
    return f"The due time passed {span(-seconds)} ago"


def file_size(n):
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def init_app(app):
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["utc_time"] = utc_time
    app.jinja_env.filters["file_size"] = file_size
    app.jinja_env.filters["time_left"] = time_left
    app.jinja_env.globals["utcnow"] = utcnow
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.jinja_env.globals["STEPS"] = STEP_BY_NAME
    app.jinja_env.globals["student_step_detail"] = student_step_detail
    app.jinja_env.globals["student_submission_detail"] = student_submission_detail
    app.jinja_env.globals["user_topic"] = user_topic
    app.jinja_env.globals["submission_topic"] = submission_topic
