"""The built-in similarity check, used when no Turnitin is configured: how much of this
submission's text also appears in the other students' submissions of the same assignment.

Text is cut into overlapping runs of five words ("shingles"). The score is the percentage of
this submission's shingles found in any other submission; each match gives the percentage
found in that one submission. Work is bounded: at most MAX_TEXT characters are read from a
file and the MAX_COMPARED most recent other submissions are compared.
"""

import hashlib
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

from app.extensions import db
from app.models import Submission
from app.steps import StepSkipped

SHINGLE_WORDS = 5
MAX_TEXT = 500_000
MAX_PDF_PAGES = 200
MAX_COMPARED = 300
TOP_MATCHES = 3
# Shingles kept in a process, counted in shingles (some 60 bytes each): enough for every essay
# of a large deadline, so each is read and cut up once per worker rather than once per check.
MAX_CACHED_SHINGLES = 1_000_000
# Documents stored inside office files (docx, odt), and the most we unpack of one.
OFFICE_TEXT_MEMBERS = ("word/document.xml", "content.xml")
MAX_OFFICE_XML = MAX_TEXT * 10


def extract_text(path, content_type, filename):
    if not path or not Path(path).exists():
        return ""
    if content_type.startswith("text/"):
        with open(path, "rb") as fh:
            return fh.read(MAX_TEXT).decode("utf-8", errors="replace")
    if content_type == "application/pdf":
        return _pdf_text(path)
    if filename.lower().endswith((".docx", ".odt")):
        return _office_text(path)
    return ""


def _pdf_text(path):
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError:
        return ""
    try:
        texts, length = [], 0
        for index in range(min(len(pdf), MAX_PDF_PAGES)):
            text = pdf[index].get_textpage().get_text_range()
            texts.append(text)
            length += len(text)
            if length > MAX_TEXT:
                break
        return "\n".join(texts)[:MAX_TEXT]
    finally:
        pdf.close()


def _office_text(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            member = next((m for m in OFFICE_TEXT_MEMBERS if m in names), None)
            if member is None or archive.getinfo(member).file_size > MAX_OFFICE_XML:
                return ""
            xml = archive.read(member).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError):
        return ""
    return re.sub(r"<[^>]+>", " ", xml)[:MAX_TEXT]


def words(text):
    return re.findall(r"\w+", text.lower())


def shingles(text):
    found = words(text)
    return {
        hashlib.blake2b(" ".join(found[i:i + SHINGLE_WORDS]).encode(), digest_size=8).digest()
        for i in range(len(found) - SHINGLE_WORDS + 1)
    }


def submission_text(submission):
    return extract_text(submission.stored_path, submission.content_type, submission.filename)


class ShingleCache:
    """Shingles by the file's SHA-256 (stored files are content-addressed, so an entry never
    goes stale), the least recently used dropped first past MAX_CACHED_SHINGLES."""

    def __init__(self, limit=MAX_CACHED_SHINGLES):
        self.limit = limit
        self.entries = OrderedDict()
        self.size = 0

    def shingles(self, submission):
        found = self.entries.get(submission.sha256)
        if found is not None:
            self.entries.move_to_end(submission.sha256)
            return found
        found = frozenset(shingles(submission_text(submission)))
        self.entries[submission.sha256] = found
        self.size += len(found)
        while self.size > self.limit and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped)
        return found


cache = ShingleCache()


def other_submissions(submission):
    """The submissions to compare with: only the columns a comparison reads."""
    return db.session.execute(
        db.select(Submission.id, Submission.filename, Submission.stored_path,
                  Submission.content_type, Submission.sha256)
        .where(
            Submission.assignment_id == submission.assignment_id,
            Submission.student_id != submission.student_id,
            Submission.stored_path.is_not(None),
            Submission.status != "rejected",
        )
        .order_by(Submission.received_at.desc())
        .limit(MAX_COMPARED)
    ).all()


def compare(submission):
    """(score, report) for the submission, or StepSkipped when it has no text to compare."""
    text = submission_text(submission)
    if not text.strip():
        raise StepSkipped(f"Not checked: no text could be read from {submission.filename}")
    mine = shingles(text)
    if not mine:
        raise StepSkipped(
            f"Not checked: too little text to compare (fewer than {SHINGLE_WORDS} words)"
        )
    others = other_submissions(submission)
    found_elsewhere = set()
    matches = []
    for other in others:
        shared = mine & cache.shingles(other)
        if shared:
            found_elsewhere |= shared
            matches.append({"submission_id": other.id, "filename": other.filename,
                            "percent": round(100 * len(shared) / len(mine))})
    matches.sort(key=lambda match: match["percent"], reverse=True)
    score = round(100 * len(found_elsewhere) / len(mine))
    return score, {"source": "built-in", "overall": score, "compared_with": len(others),
                   "matches": matches[:TOP_MATCHES]}


def check(submission):
    score, report = compare(submission)
    submission.similarity = score
    submission.similarity_report = report
    db.session.commit()
    compared = report["compared_with"]
    detail = f"Similarity {score}% (compared with {compared} other submission"
    detail += ")" if compared == 1 else "s)"
    if report["matches"]:
        top = report["matches"][0]
        detail += f"; closest: submission #{top['submission_id']} ({top['percent']}%)"
    return detail
