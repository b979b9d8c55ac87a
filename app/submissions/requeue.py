"""Staff action: put a failed step back in its queue."""

from app.submissions import bp  # noqa: F401
