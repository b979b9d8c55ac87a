"""Releasing grades asks for a confirmation first, and released grades can be withdrawn:
students stop seeing their marks, live and on reload, until staff release again."""

from app.extensions import db
from app.models import Assignment
from tests.conftest import csrf_from, run_jobs
from tests.test_grades import (
    events_on,
    logout,
    post_form,
    save_mark,
    student_view,
    submission_for,
)


def released_at(assignment_id):
    db.session.remove()
    return db.session.get(Assignment, assignment_id).released_at


def test_release_now_without_the_confirmation_releases_nothing(client, auth, world):
    essay = world.essay.id
    alice_sub = submission_for(world, "alice")
    auth.login("sam@uni.test")
    save_mark(client, alice_sub, "44", "")
    page = client.get(f"/staff/assignments/{essay}").get_data(as_text=True)
    assert 'id="confirm-release"' in page and "1 of 1 submissions marked." in page

    refused = post_form(client, essay, "release")
    assert refused.status_code == 400
    assert "Tick the box to confirm the release." in refused.get_data(as_text=True)
    run_jobs()
    assert released_at(essay) is None
    assert db.session.get(Assignment, essay).release_at is None


def test_withdrawn_grades_are_hidden_from_students_until_released_again(client, auth, world):
    essay = world.essay.id
    alice_sub = submission_for(world, "alice")
    auth.login("sam@uni.test")
    save_mark(client, alice_sub, "44", "Well structured.")
    post_form(client, essay, "release", confirm="y")
    run_jobs()
    assert released_at(essay) is not None
    assert 'id="withdraw-release"' in client.get(f"/staff/assignments/{essay}").get_data(
        as_text=True)

    response = post_form(client, essay, "release/withdraw")
    assert response.status_code == 303
    assert "Grades withdrawn" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert released_at(essay) is None
    api, grade_box = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"] is None
    assert "Not released yet." in grade_box and "44" not in grade_box
    assert events_on(f"submission.{alice_sub}", "grade")[-1].payload == {
        "submission_id": alice_sub, "withdrawn": True}

    logout(client)
    auth.login("sam@uni.test")
    post_form(client, essay, "release", confirm="y")
    run_jobs()
    api, grade_box = student_view(client, auth, "alice@uni.test", alice_sub)
    assert api["grade"]["score"] == 44 and "44.0 / 50" in grade_box


def test_only_the_courses_staff_may_withdraw(client, auth, world):
    essay = world.essay.id
    auth.login("alice@uni.test")
    page = client.get(f"/assignments/{essay}")
    assert page.status_code == 200, page.status_code
    page = page.get_data(as_text=True)
    response = client.post(f"/staff/assignments/{essay}/release/withdraw",
                           data={"csrf_token": csrf_from(page)})
    assert response.status_code == 404
