"""A private PostgreSQL cluster for the suite, on a free port, when none answers on 5432."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _bin(name):
    found = shutil.which(name) or next(iter(sorted(glob.glob(
        f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise SystemExit(
            f"PostgreSQL's {name} is not installed: install the 'postgresql' package, "
            "or set TEST_POSTGRES_URL to a server the suite may create databases on"
        )
    return found


def _as_owner(command, owner):
    if os.geteuid() == 0:
        return ["runuser", "-u", owner, "--", *command]
    return command


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(workdir, seconds=60):
    """Returns (process, admin URL); stopping the process stops the cluster."""
    workdir = Path(workdir)
    data = workdir / "data"
    owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(workdir, owner)
    if not (data / "PG_VERSION").exists():
        subprocess.run(_as_owner([_bin("initdb"), "-D", str(data), "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8"], owner),
                       check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    process = subprocess.Popen(
        _as_owner([_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                   "-k", str(workdir), "-c", "fsync=off"], owner),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the private PostgreSQL did not start") from None
            time.sleep(0.2)
    time.sleep(0.5)
    return process, f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
