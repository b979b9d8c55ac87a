import re

from app.extensions import db
from app.models import Assignment, Course, User


def test_seed_demo_creates_course_assignment_and_accounts_that_can_log_in(
        app, runner, client, auth):
    result = runner.invoke(args=["seed-demo", "--password", "demo-pass-1"])
    assert result.exit_code == 0, result.output
    for email in ("staff@example.edu", "alice@example.edu", "bob@example.edu",
                  "admin@example.edu"):
        assert email in result.output
    course = db.session.execute(db.select(Course).filter_by(code="DEMO101")).scalar_one()
    assignment = db.session.execute(db.select(Assignment)).scalar_one()
    assert assignment.course_id == course.id and assignment.is_open()
    assert auth.login("alice@example.edu", "demo-pass-1").status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "DEMO101" in page and assignment.title in page


def test_seed_demo_is_idempotent_and_can_reset_passwords(app, runner, auth):
    runner.invoke(args=["seed-demo", "--password", "first-pass"])
    again = runner.invoke(args=["seed-demo"])
    assert again.exit_code == 0 and "(unchanged)" in again.output
    assert db.session.query(Course).count() == 1
    assert db.session.query(User).count() == 4
    runner.invoke(args=["seed-demo", "--password", "second-pass"])
    assert auth.login("bob@example.edu", "second-pass").status_code == 302


def test_seed_demo_without_password_prints_random_ones_that_work(app, runner, auth):
    result = runner.invoke(args=["seed-demo"])
    found = re.search(r"alice@example.edu\s+password: (\S+)", result.output)
    assert found and len(found.group(1)) >= 10
    assert auth.login("alice@example.edu", found.group(1)).status_code == 302


def test_seed_demo_is_refused_in_production(app, runner):
    app.config["ENV_NAME"] = "production"
    result = runner.invoke(args=["seed-demo", "--password", "x"])
    assert result.exit_code != 0
    assert "refused under production" in result.output
    assert db.session.query(User).count() == 0


def test_create_user_then_log_in_with_that_role(app, runner, auth):
    result = runner.invoke(args=["create-user", "--email", "New@Uni.test", "--password",
                                 "pw-123456", "--role", "staff"])
    assert result.exit_code == 0 and "Created staff new@uni.test" in result.output
    user = db.session.execute(db.select(User).filter_by(email="new@uni.test")).scalar_one()
    assert user.role == "staff"
    assert auth.login("new@uni.test", "pw-123456").status_code == 302
    bad = runner.invoke(args=["create-user", "--email", "x@uni.test", "--password", "p",
                              "--role", "wizard"])
    assert bad.exit_code != 0
