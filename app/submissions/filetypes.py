"""Judge an upload's type by its content, not only its name."""

import unicodedata
from pathlib import PurePosixPath

TEXT_EXTENSIONS = {
    "txt", "md", "rst", "csv", "tsv", "json", "xml", "html", "css", "tex", "bib",
    "py", "java", "c", "h", "cpp", "hpp", "cc", "js", "ts", "rb", "go", "rs", "r", "sql",
    "sh", "m", "hs", "ml", "kt", "swift", "scala", "ipynb", "yaml", "yml",
}
ZIP_EXTENSIONS = {"zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "jar", "epub"}
MAGIC = {
    "pdf": (b"%PDF-",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),
}
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
CONTENT_TYPES = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "zip": "application/zip",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
}
# Characters that let a name pretend to be something else (right-to-left override and kin).
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class BadFilename(ValueError):
    pass


def clean_filename(raw):
    """The name as the student gave it, or BadFilename with the reason."""
    name = unicodedata.normalize("NFC", raw or "").strip()
    if not name:
        raise BadFilename("The file has no name.")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in PurePosixPath(name).parts:
        raise BadFilename("File names may not contain folders or '..'.")
    if any(unicodedata.category(ch) in ("Cc", "Cs") or ch in BIDI_CONTROLS for ch in name):
        raise BadFilename("File names may not contain control characters.")
    if name.startswith("."):
        raise BadFilename("File names may not start with a dot.")
    if len(name.encode()) > 255:
        raise BadFilename("The file name is longer than 255 bytes.")
    return name


def extension(name):
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    return suffix


def looks_like_text(head):
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def content_matches(ext, head):
    if ext in MAGIC:
        return head.startswith(MAGIC[ext]) and (ext != "webp" or head[8:12] == b"WEBP")
    if ext in ZIP_EXTENSIONS:
        return head.startswith(ZIP_MAGIC)
    if ext in TEXT_EXTENSIONS:
        return looks_like_text(head)
    return True


def content_type(ext):
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    if ext in TEXT_EXTENSIONS:
        return "text/plain"
    return "application/octet-stream"
