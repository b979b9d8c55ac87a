from datetime import UTC

from flask_wtf.csrf import generate_csrf

from app.pipeline import STEP_BY_NAME
from app.wording import student_step_detail, student_submission_detail


def local_time(dt, tz):
    if dt is None:
        return ""
    return dt.astimezone(tz).strftime("%a %d %b %Y, %H:%M %Z")


def utc_time(dt):
    if dt is None:
        return ""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.jinja_env.globals["STEPS"] = STEP_BY_NAME
    app.jinja_env.globals["student_step_detail"] = student_step_detail
    app.jinja_env.globals["student_submission_detail"] = student_submission_detail
