"""The moving parts of a fault run: a private PostgreSQL that can be stopped and started again on
the same port and data directory, and the Procfile's worker and scheduler processes, kept
running the way a process manager keeps dynos running."""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.postgres_local import _as_owner, _bin
from tests.conftest import ROOT
from tests.helpers import kill_tree
from tests.services import free_port


class PostgresCluster:
    def __init__(self):
        # Under /tmp, not pytest's private temporary tree, which the postgres user cannot enter.
        self.workdir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        shutil.chown(self.workdir, self.owner)

    @property
    def admin_url(self):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command):
        subprocess.run(_as_owner([str(part) for part in command], self.owner), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)

    def start(self):
        if not (self.data / "PG_VERSION").exists():
            self._run(_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                      "-E", "UTF8")
        options = f"-p {self.port} -h 127.0.0.1 -k {self.workdir} -c fsync=off"
        self._run(_bin("pg_ctl"), "-D", self.data, "-l", self.workdir / "postgres.log",
                  "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self):
        self._run(_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def running(self):
        return (self.data / "postmaster.pid").exists()

    def remove(self):
        if self.running:
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Fleet:
    """Workers and the scheduler as subprocesses. `keep_running` restarts any that exited, as
    a process manager restarts a crashed dyno; every exit it finds is kept in `exits`."""

    def __init__(self, env, log_dir, workers):
        self.env = env
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.size = workers
        self.workers = []
        self.scheduler = None
        self.exits = []  # (process name, pid, exit status) of every process that ended
        self._started = 0

    def _spawn(self, name, command):
        self._started += 1
        log = open(self.log_dir / f"{self._started:03d}-{name}.log", "wb")
        with log:
            # A session of its own, so a kill reaches the process tree and nothing else.
            return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start(self):
        for _ in range(self.size):
            self.workers.append(self._spawn("worker", [sys.executable, "worker.py"]))
        self.scheduler = self._spawn("scheduler", [
            str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "run-scheduler",
            "--interval", "1"])
        return self

    def keep_running(self):
        for index, process in enumerate(self.workers):
            if process.poll() is not None:
                self.exits.append(("worker", process.pid, process.returncode))
                self.workers[index] = self._spawn("worker", [sys.executable, "worker.py"])
        if self.scheduler.poll() is not None:
            self.exits.append(("scheduler", self.scheduler.pid, self.scheduler.returncode))
            self.scheduler = self._spawn("scheduler", self.scheduler.args)

    def kill(self, pid):
        """SIGKILL a worker and its work horse, then start its replacement."""
        kill_tree(pid)
        for process in self.workers:
            if process.pid == pid:
                process.wait(10)
        self.keep_running()

    def stop(self):
        processes = [p for p in (*self.workers, self.scheduler) if p is not None]
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait(10)

    def log_lines(self, *needles):
        """Lines of every process log that contain any of `needles`."""
        found = []
        for path in sorted(self.log_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(needle in line for needle in needles):
                    found.append(f"{path.name}: {line}")
        return found
