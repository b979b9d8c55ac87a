"""Release times as markers give them: a wall-clock time in the course's zone (pages), or an
ISO-8601 time with its offset (API)."""

from datetime import UTC, datetime

from app.grades.release import ReleaseError


def course_time(naive, tz):
    """A wall-clock time typed by a marker, in the course's zone, as an aware UTC time."""
    local = naive.replace(tzinfo=tz)
    if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise ReleaseError(f"{naive:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks "
                           "change then. Choose another time.")
    return local.astimezone(UTC)


def parse_iso_time(raw):
    if not isinstance(raw, str):
        raise ReleaseError("`at` must be an ISO-8601 date and time.")
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ReleaseError("`at` must be an ISO-8601 date and time.") from None
    if at.tzinfo is None:
        raise ReleaseError("`at` needs a UTC offset, for example 2030-01-31T09:00:00Z.")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # an offset that pushes the time past year 1 or 9999
        raise ReleaseError("`at` must be an ISO-8601 date and time.") from None
