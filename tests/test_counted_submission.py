"""A student can see which submission is the one marked, is warned before a new upload
replaces it (and when the new one would be late), and a mark stays with the submission it was
given for, where staff can still see it."""

import html
import re
from datetime import timedelta

from app.extensions import db
from app.models import Grade, utcnow
from tests.helpers import logged_in
from tests.test_grades import submission_for


def page(viewer, url):
    """The page's text as read, with its markup kept only where a test looks for it."""
    markup = viewer.get(url).get_data(as_text=True)
    text = re.sub(r"<(?!input|span class=\"badge)[^>]*>", "", markup)
    return html.unescape(" ".join(text.split()))


def test_assignment_page_shows_the_marked_submission_and_warns_before_replacing_it(app, world):
    first = submission_for(world, "alice", ago=timedelta(hours=2))
    latest = submission_for(world, "alice", ago=timedelta(hours=1))
    submission_for(world, "alice", ago=timedelta(minutes=5), status="rejected")
    alice = logged_in(app, "alice@uni.test")
    shown = page(alice, f"/assignments/{world.essay.id}")
    assert f"The one that is marked: #{latest}, your latest accepted submission." in shown
    assert shown.count('<span class="badge counts">Marked one') == 1
    assert (f"Only your latest accepted submission is marked: submitting again replaces "
            f"#{latest}.") in shown
    assert '<input type="checkbox" id="confirm-replace" required>' in shown
    assert "will be marked late" not in shown

    replaced = page(alice, f"/submissions/{first}")
    assert f"No: replaced by #{latest}, the latest accepted submission" in replaced
    assert "Yes: this is the latest accepted submission" in page(alice, f"/submissions/{latest}")


def test_after_the_due_time_the_warning_says_the_new_one_will_be_late(app, world):
    world.essay.due_at = utcnow() - timedelta(minutes=10)
    db.session.commit()
    alice = logged_in(app, "alice@uni.test")
    assert ("The due time has passed: what you submit now will be marked late."
            in page(alice, f"/assignments/{world.essay.id}"))
    latest = submission_for(world, "alice", ago=timedelta(hours=1))
    shown = page(alice, f"/assignments/{world.essay.id}")
    assert (f"submitting again replaces #{latest}, and the new one will be marked late."
            in shown)
    assert f"Replace #{latest} with this file, marked late" in shown


def test_a_mark_stays_with_the_submission_it_was_given_for(app, world):
    marked = submission_for(world, "alice", ago=timedelta(hours=2))
    db.session.add(Grade(submission_id=marked, score=40, feedback="", marker=world.users["sam"]))
    db.session.commit()
    later = submission_for(world, "alice", ago=timedelta(hours=1), late=True)

    sam = logged_in(app, "sam@uni.test")
    shown = page(sam, f"/staff/assignments/{world.essay.id}")
    assert f"Not marked; earlier #{marked} was marked 40.0 and keeps that mark" in shown
    assert db.session.get(Grade, db.session.scalar(
        db.select(Grade.id).filter_by(submission_id=marked))) is not None
    assert f'id="row-{later}"' in sam.get(f"/staff/assignments/{world.essay.id}").get_data(
        as_text=True)


def test_marking_page_lists_students_who_have_not_submitted(app, world):
    submission_for(world, "alice")
    sam = logged_in(app, "sam@uni.test")
    shown = page(sam, f"/staff/assignments/{world.essay.id}")
    assert "1 of 2 students have submitted." in shown
    assert "bob@uni.test Nothing submitted." in shown
    assert "Carol" not in shown  # enrolled in another course
