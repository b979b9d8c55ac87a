import io

from app.extensions import db
from app.models import Submission
from tests.conftest import run_jobs


def test_student_upload_reaches_completed_through_workers(client, auth, world):
    auth.login("alice@uni.test")
    page = client.get(f"/assignments/{world.essay.id}").get_data(as_text=True)
    from tests.conftest import csrf_from
    import re
    key = re.search(r'name="idempotency_key"[^>]*value="([^"]+)"', page)
    assert key
    response = client.post(f"/assignments/{world.essay.id}", data={
        "csrf_token": csrf_from(page), "idempotency_key": key.group(1),
        "file": (io.BytesIO(b"hello world, this is my essay text\n"), "essay.txt"),
    }, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    run_jobs()
    sub = db.session.execute(db.select(Submission)).scalar_one()
    print([(s.name, s.status, s.detail, s.last_error) for s in sub.steps])
    assert sub.status == "completed"
