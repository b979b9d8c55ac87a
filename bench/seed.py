"""A course full of students with API tokens, and the files they hand in."""

import io
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from PIL import Image
from werkzeug.security import generate_password_hash

# A scanned essay: image-only pages, so the similarity check finds no text and skips quickly
# (its cost grows with the number of earlier submissions) and the preview renders a real page.
PAGE_POINTS = (595, 842)


@dataclass
class Cohort:
    assignment_id: int
    staff_token: str
    students: list  # [user_id, token, email]


def seed_cohort(students):
    """One course with `students` students and a member of staff, one open PDF assignment."""
    from app.extensions import db
    from app.models import ApiToken, Assignment, Course, Enrollment, User, utcnow

    code = f"B{uuid.uuid4().hex[:6].upper()}"
    now = utcnow()
    password_hash = generate_password_hash(uuid.uuid4().hex)  # nobody logs in with it
    course = Course(code=code, title="Benchmark course", timezone="UTC")
    assignment = Assignment(course=course, title="Essay", due_at=now + timedelta(days=1),
                            cutoff_at=now + timedelta(days=2), allowed_types="pdf",
                            max_size_mb=5, max_score=100)
    staff = User(email=f"staff@{code.lower()}.bench", name="Staff", role="staff",
                 password_hash=password_hash)
    users = [User(email=f"student{i}@{code.lower()}.bench", name=f"Student {i}",
                  role="student", password_hash=password_hash) for i in range(students)]
    db.session.add_all([course, assignment, staff, *users,
                        Enrollment(user=staff, course=course, role="staff")])
    db.session.add_all(Enrollment(user=user, course=course, role="student") for user in users)
    staff_token = ApiToken.issue(staff)
    tokens = [ApiToken.issue(user) for user in users]
    db.session.commit()
    return Cohort(assignment.id, staff_token,
                  [[user.id, token, user.email] for user, token in zip(users, tokens,
                                                                      strict=True)])


def scanned_pdf(target_bytes, seed=0):
    """A one-page PDF holding a noisy scan, within a few percent of `target_bytes`."""
    rng = random.Random(seed)
    side = 200
    for _ in range(6):
        data = _pdf_page(side, rng)
        if abs(len(data) - target_bytes) < target_bytes * 0.03:
            break
        side = max(16, int(side * (target_bytes / len(data)) ** 0.5))
    return data


def _pdf_page(side, rng):
    pixels = rng.randbytes(side * side)
    image = Image.frombytes("L", (side, side), pixels).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PDF", resolution=side / PAGE_POINTS[0] * 72)
    return buffer.getvalue()
