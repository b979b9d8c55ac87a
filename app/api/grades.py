"""API routes for marking and grade release."""

from app.api import bp  # noqa: F401
