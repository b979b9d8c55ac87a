"""What every benchmark runs against, started privately and stopped afterwards: a Redis, a
throwaway database (SQLite file, or a private database on a PostgreSQL server), clamd with the
project's signatures, gunicorn with the gevent worker (gunicorn.conf.py, as the Procfile runs
it) and `python worker.py` processes. Nothing here touches a shared server's data."""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests
import sqlalchemy as sa

from app.config import database_url
from scripts import clamd_local
from tests.services import free_port, redis_binary

ROOT = Path(__file__).resolve().parent.parent
OPEN_FILES = 20000
LOCAL_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


class BenchError(RuntimeError):
    """A benchmark could not run as planned; the message says what to look at."""


def raise_open_files():
    # Thousands of held event streams need as many descriptors in the web process and Redis.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def answers(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_server():
    """The PostgreSQL server to make throwaway databases on, or None when there is none."""
    if os.environ.get("BENCH_DATABASE_URL"):
        return database_url(os.environ["BENCH_DATABASE_URL"])
    return LOCAL_POSTGRES if answers("127.0.0.1", 5432) else None


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def child_pids(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def plan_from(args, defaults, keys):
    """A benchmark's sizes: its quick or full plan, with what the command line set; logs only
    warnings, so the figures stand out."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    return {**defaults, **{key: getattr(args, key) for key in keys if getattr(args, key)}}


def percentile(values, fraction):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.999999) - 1))
    return ordered[index]


def log_tail(path, lines=30):
    if not Path(path).exists():
        return "(no log)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


class Web:
    """One gunicorn master and its gevent workers."""

    def __init__(self, process, port, log):
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self):
        return child_pids(self.process.pid)

    def log_offset(self):
        return self.log.stat().st_size

    def access_lines(self, since=0):
        with open(self.log, "rb") as fh:
            fh.seek(since)
            return [line.decode(errors="replace") for line in fh
                    if line.startswith(b"method=")]

    def wait_until_up(self, path="/healthz", seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited; its log ends:\n{log_tail(self.log)}")
            try:
                if requests.get(self.url + path, timeout=2).status_code < 500:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer in {seconds} s:\n{log_tail(self.log)}")

    def warm_up(self, token, requests_count=20):
        """A few authenticated API reads at once, so every gevent worker has loaded its code
        and opened its database connections before anything is measured."""
        def read(_):
            return requests.get(self.url + "/api/v1/assignments", timeout=60,
                                headers={"Authorization": f"Bearer {token}"}).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = set(pool.map(read, range(requests_count)))
        if statuses != {200}:
            raise BenchError(f"warm-up requests answered {sorted(statuses)}")


class Stack:
    """Private Redis, database, clamd and the processes started on them; a context manager."""

    def __init__(self, name, database="sqlite", clamd=True, keep=False):
        self.name = name
        self.database = database
        self.with_clamd = clamd
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.storage = self.workdir / "storage"
        self.secret_key = uuid.uuid4().hex
        self.children = []
        self.redis_port = free_port()
        self.database_url = None
        self.clamd_socket = None
        self._drop_database = None
        self._clamd = None

    @property
    def redis_url(self):
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def __enter__(self):
        try:
            self._start_redis()
            self._create_database()
            if self.with_clamd and clamd_local.clamd_binary():
                self._clamd, self.clamd_socket = clamd_local.start(self.workdir / "clamd")
            self._migrate()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for child, stop_signal, log in reversed(self.children):
            _stop(child, stop_signal)
            log.close()
        self.children = []
        if self._clamd is not None:
            clamd_local.stop(self._clamd)
            self._clamd = None
        if self._drop_database is not None:
            self._drop_database()
            self._drop_database = None
        if self.keep:
            print(f"  (logs kept in {self.workdir})", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start_redis(self):
        workdir = self.workdir / "redis"
        workdir.mkdir()
        self._spawn("redis", [
            redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(workdir),
            "--maxclients", str(OPEN_FILES - 100),
        ], env=os.environ, stop_signal=signal.SIGTERM)
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BenchError("Redis did not start") from None
                time.sleep(0.05)

    def _create_database(self):
        if self.database == "sqlite":
            self.database_url = f"sqlite:///{self.workdir / 'bench.db'}"
            return
        server = postgres_server()
        if server is None:
            raise BenchError("no PostgreSQL server (set BENCH_DATABASE_URL)")
        name = f"submissions_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.database_url = (sa.engine.make_url(server).set(database=name)
                             .render_as_string(hide_password=False))

        def drop():
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        self._drop_database = drop

    def _migrate(self):
        from flask_migrate import upgrade

        from app.extensions import db

        with self.app().app_context():
            upgrade(directory=str(ROOT / "migrations"))
            db.engine.dispose()

    def config(self):
        return {
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "REDIS_URL": self.redis_url,
            "STORAGE_DIR": str(self.storage),
            "SECRET_KEY": self.secret_key,
            "CLAMD_SOCKET": str(self.clamd_socket) if self.clamd_socket else None,
            "MIGRATIONS_DIR": str(ROOT / "migrations"),
        }

    def app(self, **config):
        """The app in this process, on this stack's Redis, database and storage."""
        from app import create_app

        return create_app({**self.config(), **config})

    def env(self, **extra):
        env = {key: value for key, value in os.environ.items()
               if key not in ("DATABASE_URL", "REDIS_URL", "STORAGE_DIR", "CLAMD_SOCKET",
                              "CLAMD_URL", "SMTP_URL", "TURNITIN_URL", "ADMIN_SYNC_URL")}
        env.update({
            "APP_ENV": "production",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "STORAGE_DIR": str(self.storage),
            "SECRET_KEY": self.secret_key,
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        if self.clamd_socket:
            env["CLAMD_SOCKET"] = str(self.clamd_socket)
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def _spawn(self, name, command, env, stop_signal, niceness=0, root=ROOT):
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "ab")

        def prepare():
            raise_open_files()
            # As `nice` would start it. On Linux this alone does not lower a process that
            # leads its own session against other sessions (autogroups); a worker.py with
            # WORKER_NICENESS lowers its own session's group, one from before it does not.
            os.nice(niceness)

        child = subprocess.Popen(command, cwd=root, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=prepare)
        self.children.append((child, stop_signal, log))
        return child, log_path

    def web(self, wsgi="wsgi:app", name="web", workers=2, connections=2000, root=ROOT, **env):
        """gunicorn as the Procfile's web line runs it, on a free port of 127.0.0.1; `root` is
        the checkout it runs from (another commit's, for a before/after)."""
        port = free_port()
        env = self.env(PORT=port, WEB_CONCURRENCY=workers, WEB_CONNECTIONS=connections, **env)
        # SIGINT is gunicorn's quick shutdown: held event streams would stall a graceful one.
        child, log = self._spawn(name, [
            sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{port}", wsgi,
        ], env=env, stop_signal=signal.SIGINT, root=root)
        return Web(child, port, log).wait_until_up()

    def workers(self, count, queues=(), niceness=0, root=ROOT, **env):
        return [
            self._spawn(f"worker{index}", [sys.executable, "worker.py", *queues],
                        env=self.env(**env), stop_signal=signal.SIGTERM, niceness=niceness,
                        root=root)[0]
            for index in range(count)
        ]

    def wait_for_workers(self, count, seconds=60):
        """Until `count` RQ workers have registered with Redis (started and listening)."""
        from rq import Worker

        connection = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + seconds
        try:
            while Worker.count(connection=connection) < count:
                if time.monotonic() > deadline:
                    raise BenchError(f"fewer than {count} workers started:\n"
                                     f"{log_tail(self.workdir / 'worker0.log')}")
                time.sleep(0.2)
        finally:
            connection.close()

    def stop(self, process):
        for entry in list(self.children):
            child, stop_signal, log = entry
            if child is process:
                _stop(child, stop_signal)
                log.close()
                self.children.remove(entry)


def _stop(child, stop_signal, seconds=20):
    if child.poll() is None:
        try:
            os.killpg(child.pid, stop_signal)
            child.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(5)
        except ProcessLookupError:
            pass
