"""Start a private clamd with the project's own signature database (no download needed)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = ROOT / "clamav" / "signatures"
CONFIG_TEMPLATE = ROOT / "clamav" / "clamd.conf.in"
# A unix socket path longer than this (108 bytes with its NUL on Linux) cannot be bound.
MAX_SOCKET_PATH = 100


def clamd_binary():
    return shutil.which("clamd") or next(
        (str(p) for p in (Path("/usr/sbin/clamd"), Path("/usr/local/sbin/clamd")) if p.exists()),
        None,
    )


def socket_path(workdir):
    sock = Path(workdir) / "clamd.sock"
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        return Path(tempfile.mkdtemp(prefix="clamd-")) / "clamd.sock"
    return sock


def write_config(workdir, tcp_port=None, **settings):
    """clamd.conf from the template; `settings` replace template lines, e.g. MaxFiles=100."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(workdir)
    text = CONFIG_TEMPLATE.read_text().format(
        socket=sock, signatures=SIGNATURES, workdir=workdir,
    )
    for option, value in settings.items():
        text, found = re.subn(rf"^{option} .*$", f"{option} {value}", text, flags=re.MULTILINE)
        if not found:
            raise ValueError(f"{option} is not in {CONFIG_TEMPLATE.name}")
    if tcp_port:
        text += f"TCPSocket {tcp_port}\nTCPAddr 127.0.0.1\n"
    config = workdir / "clamd.conf"
    config.write_text(text)
    return config, sock


def ping(sock_path, timeout=1.0):
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


def _diagnostics(workdir):
    parts = []
    for name in ("clamd.stderr", "clamd.log"):
        path = Path(workdir) / name
        if path.exists() and path.stat().st_size:
            parts.append(f"{name}:\n{path.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts) or "no output"


def start(workdir, tcp_port=None, seconds=60, **settings):
    """Start clamd in the foreground of a child process; returns (process, socket path)."""
    config, sock = write_config(workdir, tcp_port, **settings)
    if ping(sock):
        raise RuntimeError(f"a clamd already answers at {sock}; stop it first")
    stderr_path = Path(workdir) / "clamd.stderr"
    with open(stderr_path, "wb") as stderr:
        # Its own session, so stop() (or Ctrl-C handling in dev.py) reaches clamd alone.
        process = subprocess.Popen(
            [clamd_binary(), "--foreground", f"--config-file={config}"],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    deadline = time.monotonic() + seconds
    while not ping(sock):
        if process.poll() is not None:
            raise RuntimeError(
                f"clamd exited with status {process.returncode}\n{_diagnostics(workdir)}"
            )
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"clamd did not answer within {seconds} s\n{_diagnostics(workdir)}")
        time.sleep(0.05)
    return process, sock


def stop(process, seconds=10):
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(seconds)
