import io
import re

from app.extensions import db
from app.models import Event, Submission
from tests.conftest import csrf_from


def upload_form(client, assignment_id, content, filename, key=None):
    """Submit through the assignment page's form, as a browser would."""
    page = client.get(f"/assignments/{assignment_id}").get_data(as_text=True)
    found = re.search(r'name="idempotency_key"[^>]*value="([^"]*)"', page)
    return client.post(
        f"/assignments/{assignment_id}",
        data={"csrf_token": csrf_from(page),
              "idempotency_key": key or (found.group(1) if found else ""),
              "file": (io.BytesIO(content), filename)},
        content_type="multipart/form-data",
    )


def upload_api(client, headers, assignment_id, content, filename, key=None):
    extra = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/api/v1/assignments/{assignment_id}/submissions",
        data={"file": (io.BytesIO(content), filename)},
        headers={**headers, **extra}, content_type="multipart/form-data",
    )


def only_submission():
    return db.session.execute(db.select(Submission)).scalar_one()


def submission_count():
    return db.session.query(Submission).count()


def trail(submission_id):
    """The event trail of a submission as (type, step or '', status) tuples, in id order."""
    events = db.session.execute(
        db.select(Event).filter_by(submission_id=submission_id).order_by(Event.id)
    ).scalars()
    return [(e.type, e.payload.get("step", ""), e.payload["status"]) for e in events]
