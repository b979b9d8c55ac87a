import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from app import config as app_config
from app import create_app
from app.events.hub import Hub
from app.services import turnitin

ROOT = Path(__file__).resolve().parent.parent


def config_classes(monkeypatch, **environ):
    """The configuration classes as a process started with these environment variables has them."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "app" / "config.py"))


def app_started_with(monkeypatch, **environ):
    fresh = config_classes(monkeypatch, **environ)
    monkeypatch.setitem(app_config.CONFIGS, "testing", fresh["TestingConfig"])
    return create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


@pytest.mark.parametrize("name, value, expected", [
    ("TURNITIN_TIMEOUT", "12.5", 12.5),
    ("TURNITIN_POLL_SECONDS", "90", 90),
    ("TURNITIN_POLL_INTERVAL", "0.5", 0.5),
    ("TURNITIN_RECHECK_SECONDS", "120", 120),
    ("TURNITIN_CIRCUIT_FAILURES", "8", 8),
    ("TURNITIN_CIRCUIT_COOLDOWN", "30", 30),
    ("ADMIN_SYNC_TIMEOUT", "4.5", 4.5),
    ("SSE_HEARTBEAT_SECONDS", "5", 5),
    ("SSE_GAP_WAIT_SECONDS", "0.75", 0.75),
    ("RETRY_BACKOFF_SCALE", "0.25", 0.25),
    ("DASHBOARD_EVENTS_KEPT", "50", 50),
])
def test_a_setting_is_taken_from_the_environment(monkeypatch, name, value, expected):
    app = app_started_with(monkeypatch, **{name: value})
    assert app.config[name] == expected


def test_the_turnitin_client_and_the_event_hub_run_with_the_environments_settings(monkeypatch):
    app = app_started_with(monkeypatch, TURNITIN_URL="http://turnitin.test",
                           TURNITIN_TIMEOUT="7", TURNITIN_CIRCUIT_FAILURES="2",
                           TURNITIN_CIRCUIT_COOLDOWN="9", SSE_HEARTBEAT_SECONDS="4",
                           SSE_GAP_WAIT_SECONDS="0.3")
    client = turnitin.client_for(app.config, redis=None)
    assert (client.timeout, client.circuit.threshold, client.circuit.cooldown) == (7, 2, 9)
    hub = Hub(app)
    assert (hub.heartbeat_seconds, hub.gap_wait_seconds) == (4, 0.3)


@pytest.mark.parametrize("name, value, accepted", [
    ("TURNITIN_TIMEOUT", "0", "positive number of seconds"),
    ("TURNITIN_TIMEOUT", "half a minute", "a number of seconds"),
    ("TURNITIN_POLL_SECONDS", "-1", "at least 0"),
    ("TURNITIN_POLL_INTERVAL", "0", "positive number of seconds"),
    ("TURNITIN_RECHECK_SECONDS", "1.5", "a whole number"),
    ("TURNITIN_CIRCUIT_FAILURES", "0", "at least 1"),
    ("TURNITIN_CIRCUIT_COOLDOWN", "a minute", "a whole number"),
    ("ADMIN_SYNC_TIMEOUT", "inf", "positive number of seconds"),
    ("SSE_HEARTBEAT_SECONDS", "fifteen", "a number of seconds"),
    ("SSE_HEARTBEAT_SECONDS", "0", "positive number of seconds"),
    ("SSE_GAP_WAIT_SECONDS", "-2", "positive number of seconds"),
    ("RETRY_BACKOFF_SCALE", "fast", "a number"),
    ("RETRY_BACKOFF_SCALE", "-1", "at least 0"),
    ("RETRY_BACKOFF_SCALE", "nan", "at least 0"),
    ("DASHBOARD_EVENTS_KEPT", "0", "at least 1"),
    ("RECONCILE_EVERY_SECONDS", "0", "at least 1"),
    ("WORKER_DEAD_AFTER_SECONDS", "-5", "at least 1"),
    ("MAX_UPLOAD_MB", "0", "at least 1"),
    ("DB_POOL_SIZE", "0", "at least 1"),
])
def test_a_bad_value_names_the_setting_and_what_it_accepts(monkeypatch, name, value, accepted):
    with pytest.raises(ValueError) as refused:
        config_classes(monkeypatch, **{name: value})
    message = str(refused.value)
    assert message.startswith(name) and repr(value) in message and accepted in message


@pytest.mark.parametrize("name, value", [
    ("TURNITIN_POLL_INTERVAL", "soon"), ("RETRY_BACKOFF_SCALE", "fast"),
])
def test_a_bad_value_stops_the_app_at_start_up(name, value):
    env = {**os.environ, "APP_ENV": "testing", name: value}
    started = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert f"{name} must be" in started.stderr and repr(value) in started.stderr


class RecordingEnviron(dict):
    """os.environ that notes every name asked for."""

    def __init__(self, environ):
        super().__init__(environ)
        self.asked = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.asked.add(name)
        return super().__contains__(name)


def documented_settings():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {name for cell in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}


def test_every_environment_variable_the_app_reads_is_in_the_readme(monkeypatch):
    environ = RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", environ)
    config = runpy.run_path(str(ROOT / "app" / "config.py"))
    config["config_for_environment"]()
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    asked = set(environ.asked)
    assert {"SECRET_KEY", "TURNITIN_TIMEOUT", "WEB_CONCURRENCY"} <= asked
    assert sorted(asked - documented_settings()) == []
