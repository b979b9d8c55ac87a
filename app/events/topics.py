"""The names of live-event topics: every topic string is built and read here."""

import re

ADMIN_DASHBOARD = "admin.dashboard"
# Redis patterns covering every topic form below; the hub subscribes to exactly these.
TOPIC_PATTERNS = ("user.*", "submission.*", "assignment.*", "course.*", "admin.*")
_NUMBERED = re.compile(r"(user|submission|assignment|course)\.([1-9][0-9]{0,17})")
_ASSIGNMENT_STAFF = re.compile(r"assignment\.([1-9][0-9]{0,17})\.staff")
_COURSE_STAFF = re.compile(r"course\.([1-9][0-9]{0,17})\.staff")


class UnknownTopic(ValueError):
    """Not a topic form we publish; the message is the topic as given."""


def user_topic(user_id):
    return f"user.{user_id}"


def submission_topic(submission_id):
    return f"submission.{submission_id}"


def assignment_topic(assignment_id):
    return f"assignment.{assignment_id}"


def assignment_staff_topic(assignment_id):
    # Enrolled students may read assignment.<id>, so unreleased marks travel on this one only.
    return f"assignment.{assignment_id}.staff"


def course_topic(course_id):
    return f"course.{course_id}"


def course_staff_topic(course_id):
    # Students' private messages to the course's staff (app/messages), for those staff only.
    return f"course.{course_id}.staff"


def submission_topics(submission):
    """Where a submission's news goes: its own topic and its student's."""
    return [submission_topic(submission.id), user_topic(submission.student_id)]


def parse_topic(topic):
    """(kind, number): ("user", 3), ("assignment_staff", 7), ("admin", None)..."""
    if topic == ADMIN_DASHBOARD:
        return "admin", None
    match = _NUMBERED.fullmatch(topic)
    if match is not None:
        return match.group(1), int(match.group(2))
    match = _ASSIGNMENT_STAFF.fullmatch(topic)
    if match is not None:
        return "assignment_staff", int(match.group(1))
    match = _COURSE_STAFF.fullmatch(topic)
    if match is not None:
        return "course_staff", int(match.group(1))
    raise UnknownTopic(topic)
