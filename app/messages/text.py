"""Message text: plain text as typed, shown with its http(s) links made clickable. Nothing a
user types is ever HTML: every character is escaped, and the only tags are the links we make."""

import re
import unicodedata

from markupsafe import Markup, escape

MAX_LENGTH = 2000
# A URL runs to the next space or character that cannot be part of one in running text.
_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+", re.IGNORECASE)
# Punctuation that ends a sentence, not the link ("see https://x.org/a.").
_TRAILING = ".,;:!?)]}'\""


class BadMessage(ValueError):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def clean_body(raw):
    """The text to keep, or BadMessage saying what is wrong with it."""
    if not isinstance(raw, str):
        raise BadMessage("bad_body", "Write the message as text.")
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    # Control characters other than line breaks and tabs show as nothing or garble the page.
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc").strip()
    if not text:
        raise BadMessage("empty_message", "Write a message first.")
    if len(text) > MAX_LENGTH:
        raise BadMessage("message_too_long", f"Messages may be at most {MAX_LENGTH:,} characters; "
                         f"this one has {len(text):,}.")
    return text


def _link(url):
    shown = url
    while shown and shown[-1] in _TRAILING:
        # A closing bracket that closes one opened inside the link belongs to it (Wikipedia).
        if shown[-1] == ")" and shown.count("(") >= shown.count(")"):
            break
        shown = shown[:-1]
    rest = url[len(shown):]
    anchor = Markup('<a href="{0}" rel="noopener nofollow ugc" target="_blank">{0}</a>').format(
        shown)
    return anchor + escape(rest)


def linkify(text):
    """The text as HTML: escaped, with each http(s) URL a link that opens apart from the page."""
    parts, start = [], 0
    for match in _URL.finditer(text):
        parts.append(escape(text[start:match.start()]))
        parts.append(_link(match.group()))
        start = match.end()
    parts.append(escape(text[start:]))
    return Markup("").join(parts)
