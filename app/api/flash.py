"""API routes for flash messages (acknowledgement)."""

from app.api import bp  # noqa: F401
