"""A production build installs requirements.txt alone: every package it needs, pinned."""

import re

from tests.conftest import ROOT

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[(?P<extras>[^\]]+)\])?==[^=\s;]+$")


def requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def pinned():
    found = {}
    for line in requirements():
        match = PIN.match(line)
        assert match, f"not pinned to one exact version: {line!r}"
        extras = {extra.strip() for extra in (match["extras"] or "").split(",") if extra.strip()}
        found[match["name"].lower().replace("_", "-")] = extras
    return found


def test_every_requirement_is_pinned_to_one_exact_version():
    assert pinned()


def test_gunicorn_brings_its_gevent_worker_dependencies():
    assert "gevent" in pinned()["gunicorn"]


def test_packaging_is_pinned_for_gunicorns_gevent_worker():
    assert "packaging" in pinned()
