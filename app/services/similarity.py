"""Plagiarism check: the Turnitin client when TURNITIN_URL is set, otherwise a built-in
comparison of this submission's text with the other submissions of the same assignment."""

import hashlib
import re
import zipfile
from pathlib import Path

from app.extensions import db
from app.models import Submission
from app.pipeline import StepSkipped

SHINGLE_WORDS = 5
MAX_TEXT = 2_000_000
TOP_MATCHES = 3


def extract_text(path, content_type, filename):
    if not path or not Path(path).exists():
        return ""
    if content_type.startswith("text/"):
        return Path(path).read_bytes()[:MAX_TEXT].decode("utf-8", errors="replace")
    if content_type == "application/pdf":
        return _pdf_text(path)
    if filename.lower().endswith((".docx", ".odt")):
        return _zipped_xml_text(path, ("word/document.xml", "content.xml"))
    return ""


def _pdf_text(path):
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError:
        return ""
    try:
        texts = []
        for index in range(min(len(pdf), 200)):
            page = pdf[index]
            texts.append(page.get_textpage().get_text_range())
            if sum(map(len, texts)) > MAX_TEXT:
                break
        return "\n".join(texts)[:MAX_TEXT]
    finally:
        pdf.close()


def _zipped_xml_text(path, members):
    try:
        with zipfile.ZipFile(path) as archive:
            for member in members:
                if member in archive.namelist():
                    info = archive.getinfo(member)
                    if info.file_size > MAX_TEXT * 5:
                        return ""
                    xml = archive.read(member).decode("utf-8", errors="replace")
                    return re.sub(r"<[^>]+>", " ", xml)[:MAX_TEXT]
    except (zipfile.BadZipFile, OSError):
        return ""
    return ""


def shingles(text):
    words = re.findall(r"\w+", text.lower())
    if len(words) < SHINGLE_WORDS:
        return set()
    return {
        hashlib.blake2b(" ".join(words[i:i + SHINGLE_WORDS]).encode(), digest_size=8).hexdigest()
        for i in range(len(words) - SHINGLE_WORDS + 1)
    }


def builtin_check(submission):
    mine = shingles(extract_text(submission.stored_path, submission.content_type,
                                 submission.filename))
    if not mine:
        raise StepSkipped("Not checked: no text could be read from this file type")
    others = db.session.execute(
        db.select(Submission).where(
            Submission.assignment_id == submission.assignment_id,
            Submission.student_id != submission.student_id,
            Submission.stored_path.is_not(None),
            Submission.status != "rejected",
        )
    ).scalars().all()
    matches = []
    for other in others:
        theirs = shingles(extract_text(other.stored_path, other.content_type, other.filename))
        if theirs:
            overlap = len(mine & theirs) / len(mine)
            matches.append({"submission_id": other.id, "percent": round(100 * overlap)})
    matches.sort(key=lambda m: m["percent"], reverse=True)
    top = [m for m in matches[:TOP_MATCHES] if m["percent"] > 0]
    score = top[0]["percent"] if top else 0
    return score, {"source": "built-in", "compared_with": len(others), "matches": top}


def check(submission, config):
    score, report = builtin_check(submission)
    submission.similarity = score
    submission.similarity_report = report
    db.session.commit()
    return f"Similarity {score}% (compared with {report['compared_with']} other submissions)"
