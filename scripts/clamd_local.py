"""Start a private clamd with the project's own signature database (no download needed)."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = ROOT / "clamav" / "signatures"
CONFIG_TEMPLATE = ROOT / "clamav" / "clamd.conf.in"


def clamd_binary():
    return shutil.which("clamd") or next(
        (str(p) for p in (Path("/usr/sbin/clamd"), Path("/usr/local/sbin/clamd")) if p.exists()),
        None,
    )


def write_config(workdir, tcp_port=None):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "clamd.sock"
    text = CONFIG_TEMPLATE.read_text().format(
        socket=sock, signatures=SIGNATURES, workdir=workdir,
    )
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


def start(workdir, tcp_port=None, seconds=60):
    """Start clamd in the foreground of a child process; returns (process, socket path)."""
    config, sock = write_config(workdir, tcp_port)
    sock.unlink(missing_ok=True)
    process = subprocess.Popen(
        [clamd_binary(), "--foreground", f"--config-file={config}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + seconds
    while not ping(sock):
        if process.poll() is not None:
            log = (Path(workdir) / "clamd.log")
            raise RuntimeError(f"clamd exited: {log.read_text()[-2000:] if log.exists() else ''}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("clamd did not answer in time")
        time.sleep(0.1)
    return process, sock
