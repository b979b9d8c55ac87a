"""What the students of a fault run hand in: a course of students, one assignment, and a few
hundred small files of the kinds a course sees, a handful of them infected."""

import io
import random
from dataclasses import dataclass
from datetime import timedelta

from PIL import Image
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import ApiToken, Assignment, Course, Enrollment, User, utcnow
from tests.samples import EICAR, pdf, zip_of

STUDENTS = 40
ALLOWED_TYPES = "pdf,txt,py,png,jpg,zip"
# Turnitin reads these; for the others the similarity step is skipped before any call.
TURNITIN_READS = {"pdf", "txt"}

WORDS = (
    "analysis argument evidence method result system process model theory data sample "
    "network memory queue worker signal protocol design course student lecture reading "
    "history culture language market policy energy climate river forest city harbour "
    "experiment measure compare predict observe explain question answer source review "
    "first second because although therefore however while during after before"
).split()


@dataclass(frozen=True)
class Upload:
    filename: str
    content: bytes
    infected: bool

    @property
    def checked_by_turnitin(self):
        return self.filename.rsplit(".", 1)[-1] in TURNITIN_READS


def essay(rng, number):
    words = [rng.choice(WORDS) for _ in range(rng.randint(60, 160))]
    return (f"Essay {number}.\n" + " ".join(words) + ".\n").encode()


def program(number):
    return (f'"""Exercise {number}."""\n\n\ndef answer():\n    return {number}\n').encode()


def picture(rng, fmt):
    color = tuple(rng.randrange(256) for _ in range(3))
    size = (rng.randint(40, 160), rng.randint(40, 160))
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def uploads(count, seed=7):
    """`count` uploads of varied kinds; a handful (at least three) carry the EICAR test virus,
    one of them inside a zip."""
    rng = random.Random(seed)
    infected_every = max(count // max(3, count // 40), 1)
    made = []
    for number in range(count):
        if number % infected_every == infected_every // 2:
            if not any(u.infected and u.filename.endswith(".zip") for u in made):
                made.append(Upload(f"project-{number}.zip",
                                   zip_of({"readme.txt": b"notes\n", "tool.com": EICAR}), True))
            else:
                made.append(Upload(f"notes-{number}.txt", EICAR, True))
            continue
        kind = number % 10
        if kind < 4:
            made.append(Upload(f"essay-{number}.txt", essay(rng, number), False))
        elif kind == 4:
            made.append(Upload(f"exercise_{number}.py", program(number), False))
        elif kind in (5, 6):
            made.append(Upload(f"figure-{number}.png", picture(rng, "PNG"), False))
        elif kind == 7:
            made.append(Upload(f"photo-{number}.jpg", picture(rng, "JPEG"), False))
        elif kind == 8:
            made.append(Upload(f"poster-{number}.pdf", pdf((rng.randrange(256), 90, 40)),
                               False))
        else:
            members = {"main.py": program(number), "notes.txt": essay(rng, number)}
            made.append(Upload(f"code-{number}.zip", zip_of(members), False))
    return made


def enrol_course(students=STUDENTS):
    """A course with `students` students and one open assignment; returns (assignment, bearer
    headers per student)."""
    now = utcnow()
    course = Course(code="FLT100", title="Fault tolerance", timezone="Europe/London")
    assignment = Assignment(course=course, title="Deadline rush", due_at=now + timedelta(days=1),
                            cutoff_at=now + timedelta(days=2), allowed_types=ALLOWED_TYPES,
                            max_size_mb=5)
    # One hash for everyone: hashing forty passwords would cost seconds and prove nothing here.
    password_hash = generate_password_hash("fault run")
    people = [User(email=f"student{n:02d}@uni.test", name=f"Student {n:02d}",
                   password_hash=password_hash, role="student") for n in range(students)]
    db.session.add_all([course, assignment, *people])
    db.session.add_all(Enrollment(user=user, course=course, role="student") for user in people)
    tokens = [ApiToken.issue(user) for user in people]
    db.session.commit()
    return assignment.id, [{"Authorization": f"Bearer {token}"} for token in tokens]
