"""`make run` serves on loopback only, as the README says, unless BIND_HOST says otherwise; the
Procfile's web process, run by a platform routing to $PORT, still listens on every address."""

import os
import runpy
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bind_with(**env):
    saved = dict(os.environ)
    try:
        os.environ.pop("BIND_HOST", None)
        os.environ.update(env)
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_command(**env):
    environ = {k: v for k, v in os.environ.items() if k != "BIND_HOST"} | env
    out = subprocess.run(["make", "-n", "run"], cwd=ROOT, env=environ, capture_output=True,
                         text=True, check=True).stdout
    return next(line for line in out.splitlines() if "dev.py run" in line)


def test_make_run_binds_loopback_unless_told():
    assert run_command().startswith("BIND_HOST=${BIND_HOST:-127.0.0.1} ")
    assert bind_with(BIND_HOST="127.0.0.1", PORT="5050") == "127.0.0.1:5050"


def test_the_procfile_web_process_listens_on_every_address_for_its_platform():
    assert bind_with(PORT="8123") == "0.0.0.0:8123"
