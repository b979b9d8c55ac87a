import logging
import secrets
from datetime import timedelta

import click
from flask import current_app

from app.extensions import db
from app.models import ROLES, Assignment, Course, Enrollment, User, utcnow

log = logging.getLogger(__name__)

DEMO_ACCOUNTS = (
    ("staff@example.edu", "Sam Staff", "staff", "staff"),
    ("alice@example.edu", "Alice Student", "student", "student"),
    ("bob@example.edu", "Bob Student", "student", "student"),
    ("admin@example.edu", "Ada Admin", "admin", None),
)


def upsert_user(email, password, role, name=""):
    email = email.strip().lower()
    user = db.session.execute(db.select(User).filter_by(email=email)).scalar_one_or_none()
    created = user is None
    if created:
        user = User(email=email, name=name, role=role)
        db.session.add(user)
    if password is not None:
        user.set_password(password)
    return user, created


def seed_demo(password=None):
    """Create the demo course and accounts; returns [(email, role, password or None)]."""
    course = db.session.execute(db.select(Course).filter_by(code="DEMO101")).scalar_one_or_none()
    if course is None:
        course = Course(code="DEMO101", title="Demonstration Course", timezone="Europe/London")
        db.session.add(course)
        now = utcnow().replace(second=0, microsecond=0)
        db.session.add(Assignment(
            course=course, title="Essay 1",
            description="Upload your essay as PDF, Word, text or a zip of your project.",
            due_at=now + timedelta(days=7), cutoff_at=now + timedelta(days=8),
            allowed_types="pdf,docx,txt,md,py,zip,png,jpg", max_size_mb=20, max_score=100,
        ))
        db.session.flush()
    shown = []
    for email, name, role, course_role in DEMO_ACCOUNTS:
        existing = db.session.execute(db.select(User).filter_by(email=email)).scalar_one_or_none()
        new_password = password or (secrets.token_urlsafe(9) if existing is None else None)
        user, _ = upsert_user(email, new_password, role, name)
        if course_role and user.course_role(course.id) is None:
            db.session.add(Enrollment(user=user, course=course, role=course_role))
        shown.append((email, role, new_password))
    db.session.commit()
    return shown


def init_app(app):
    @app.cli.command("create-user")
    @click.option("--email", required=True)
    @click.option("--password", required=True)
    @click.option("--role", type=click.Choice(ROLES), default="student", show_default=True)
    @click.option("--name", default="")
    def create_user(email, password, role, name):
        """Create a user, or set the password and role of an existing one."""
        user, created = upsert_user(email, password, role, name)
        user.role = role
        db.session.commit()
        click.echo(f"{'Created' if created else 'Updated'} {role} {user.email}")

    @app.cli.command("seed-demo")
    @click.option("--password", default=None, help="Password for every demo account.")
    def seed_demo_command(password):
        """Create course DEMO101 with an open assignment and four demo accounts."""
        if current_app.config["ENV_NAME"] == "production":
            raise click.ClickException("seed-demo is refused under production config.")
        click.echo("Demo course DEMO101, assignment 'Essay 1'. Accounts:")
        for email, role, pw in seed_demo(password):
            click.echo(f"  {role:<8} {email:<22} password: {pw or '(unchanged)'}")

    @app.cli.command("reconcile")
    def reconcile_command():
        """Re-queue every step that should be queued or running but has no live job."""
        from jobs.maintenance import reconcile

        summary = reconcile()
        click.echo(" ".join(f"{key}={value}" for key, value in summary.items()))

    @app.cli.command("run-scheduler")
    @click.option("--interval", default=5.0, show_default=True, help="Seconds between polls.")
    @click.option("--burst", is_flag=True, help="Move due jobs once, then exit.")
    def run_scheduler(interval, burst):
        """Run rq-scheduler with the periodic maintenance jobs registered."""
        from jobs.maintenance import schedule_periodic, scheduler_for
        from jobs.redis_outage import REDIS_DOWN

        scheduler = scheduler_for(interval=interval)
        try:
            schedule_periodic(scheduler)
        except REDIS_DOWN as error:
            if burst:
                raise
            # The run waits for Redis, then puts every missing periodic job in place.
            log.warning("event=periodic_jobs_not_scheduled reason=redis_unavailable error=%r",
                        str(error))
        scheduler.run(burst=burst)
