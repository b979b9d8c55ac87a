"""Staff action: put a failed step back in its queue."""

from flask import abort, flash, redirect, url_for
from flask_login import current_user, login_required

from app.pipeline import STEP_BY_NAME, requeue_step
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
    title = STEP_BY_NAME[step_run.name].title
    outcome = requeue_step(step_run)
    if outcome.enqueued:
        flash(f"{title} was requeued.", "info")
    elif outcome.requeued:
        # Queued in the database; the reconciler hands it to Redis once it is back.
        flash(f"{title} was requeued; the queue is unreachable right now, so it will start "
              "within a minute of it coming back.", "info")
    elif submission.status == "rejected":
        flash(f"{title} is not run again: the file was not accepted. The student can "
              "submit a clean copy.", "info")
    else:
        flash(f"Only a failed step can be requeued; {title} is {step_run.status}.", "info")
    return redirect(url_for("submissions.detail", submission_id=submission.id), 303)
