"""Staff action: put a failed step back in its queue."""

from flask import abort, flash, redirect, url_for
from flask_login import current_user, login_required

from app.pipeline import requeue_step
from app.steps import STEP_BY_NAME
from app.submissions import bp
from app.submissions.access import visible_submission


@bp.post("/submissions/<int:submission_id>/steps/<step_name>/requeue")
@login_required
def requeue(submission_id, step_name):
    submission = visible_submission(submission_id, current_user)
    if not current_user.is_staff_of(submission.assignment.course_id):
        abort(403)
    step_run = submission.step(step_name)
    if step_run is None:
        abort(404)
    _, sentence = requeue_answer(step_run, requeue_step(step_run))
    flash(sentence, "info")
    return redirect(url_for("submissions.detail", submission_id=submission.id), 303)


def requeue_answer(step_run, outcome):
    """What staff are told after asking for a step to be requeued, on any page that asks:
    (kind, sentence), the kind one of "requeued", "later" (Redis did not take it yet) and
    "refused"."""
    title = STEP_BY_NAME[step_run.name].title
    if outcome.enqueued:
        return "requeued", f"{title} was requeued."
    if outcome.requeued:
        # Queued in the database; the reconciler hands it to Redis once it is back.
        return "later", (f"{title} was requeued; the queue is unreachable right now, so it "
                         "will start within a minute of it coming back.")
    if step_run.submission.status == "rejected":
        return "refused", (f"{title} is not run again: the file was not accepted. The "
                           "student can submit a clean copy.")
    return "refused", f"Only a failed step can be requeued; {title} is {step_run.status}."
