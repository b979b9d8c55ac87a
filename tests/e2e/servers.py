"""The real processes a browser talks to: gunicorn with the gevent worker, as the Procfile runs
it, and an RQ worker, each a subprocess on the test's database, Redis and storage."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class _Process:
    def __init__(self, env, log_path):
        self.env = env
        self.log_path = Path(log_path)
        self.process = None

    def _spawn(self, command):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars=3000):
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, sig=signal.SIGTERM, seconds=20):
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


class WebServer(_Process):
    """gunicorn, one gevent worker; `config` is passed to create_app for settings with no
    environment variable (gunicorn calls `app:create_app({...})`)."""

    def __init__(self, env, log_path, config=None, port=None):
        super().__init__(env, log_path)
        self.config = config or {}
        self.port = port or free_port()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, seconds=30):
        target = f"app:create_app({self.config!r})" if self.config else "wsgi:app"
        self._spawn([str(VENV_BIN / "gunicorn"), "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{self.port}", "--workers", "1", target])
        try:
            self._wait_until_answering(seconds)
        except BaseException:
            # A server that never came up is never handed to a fixture's teardown either.
            self.stop(signal.SIGKILL)
            raise
        return self

    def _wait_until_answering(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig=signal.SIGINT, seconds=20):
        # SIGINT is gunicorn's quick shutdown: open event streams do not hold it up.
        super().stop(sig, seconds)

    def worker_pids(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


class PipelineWorker(_Process):
    """`python worker.py`: every queue, with RQ's scheduler, as the Procfile's worker line."""

    def start(self):
        self._spawn([sys.executable, "worker.py"])
        return self
