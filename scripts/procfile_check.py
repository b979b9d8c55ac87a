"""Boot the Procfile as a production build would: a virtualenv with requirements.txt alone,
then release, web, worker and scheduler as written, and one upload through to `completed`.

Runs before any virtualenv exists, so it uses the standard library only."""

import fcntl
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
VENVS = ROOT / ".cache" / "procfile-venv"
sys.path.insert(0, str(ROOT))

from scripts import clamd_local  # noqa: E402
from scripts.dev import answers, free_port  # noqa: E402
from scripts.dev import read_procfile as procfile_lines  # noqa: E402

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVICES = ("web", "worker", "scheduler")
RELEASE_SECONDS = 120
READY_SECONDS = 60
COMPLETED_SECONDS = 120
STOP_SECONDS = 30
LOG_TAIL_LINES = 40
STARTED = time.monotonic()
# Never through an http_proxy from the environment: everything here is on loopback.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CheckFailed(Exception):
    pass


class Interrupted(Exception):
    pass


def say(message):
    print(f"[procfile-check {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def read_procfile():
    processes = procfile_lines()
    missing = [name for name in ("release", *SERVICES) if name not in processes]
    if missing:
        raise CheckFailed(f"the Procfile has no {', '.join(missing)} line")
    return processes


def ensure_venv():
    # Keyed by the interpreter too: a virtualenv belongs to the Python that made it.
    key = hashlib.sha256(
        REQUIREMENTS.read_bytes() + f"{sys.executable} {platform.python_version()}".encode()
    ).hexdigest()[:16]
    venv = VENVS / key
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for other in VENVS.iterdir():
            if other.is_dir() and other != venv:
                shutil.rmtree(other, ignore_errors=True)
        if (venv / ".complete").exists():
            say(f"virtualenv: requirements.txt unchanged, reusing {venv.relative_to(ROOT)}")
            return venv
        # Always from empty: a package left by an earlier install would hide a missing one.
        shutil.rmtree(venv, ignore_errors=True)
        say(f"virtualenv: pip install -r requirements.txt alone into {venv.relative_to(ROOT)}")
        started = time.monotonic()
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)])
        if made.returncode:
            raise CheckFailed(f"{sys.executable} -m venv failed (Debian: install python3-venv)")
        installed = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", "-r", str(REQUIREMENTS)], cwd=ROOT)
        if installed.returncode:
            raise CheckFailed("pip install -r requirements.txt failed (its output is above)")
        (venv / ".complete").write_text(key)
        say(f"virtualenv: installed in {time.monotonic() - started:.1f} s")
    return venv


class Stack:
    """Every process the check starts, each in its own session with its log in `workdir`."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.processes = []
        self.venv = None
        self.database_to_drop = None

    def log_path(self, name):
        return self.workdir / "logs" / f"{name}.log"

    def start(self, name, argv, env):
        path = self.log_path(name)
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append((name, process))
        return process

    def start_line(self, name, line, env):
        return self.start(name, ["bash", "-c", f"exec {line}"], env)

    def adopt(self, name, process):
        self.processes.append((name, process))

    def exited(self, names):
        return [(name, process.returncode) for name, process in self.processes
                if name in names and process.poll() is not None]

    def stop(self, names=None):
        chosen = [(name, process) for name, process in self.processes
                  if names is None or name in names]
        for _, process in chosen:
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for name, process in chosen:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {STOP_SECONDS} s of SIGTERM; killing it")
            # The whole session: a gunicorn worker or a work horse may outlive its parent.
            signal_group(process, signal.SIGKILL)
            process.wait()

    def print_logs(self):
        for name, _ in self.processes:
            path = self.log_path(name)
            if name == "clamd":
                path = self.workdir / "clamd" / "clamd.stderr"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            if not lines:
                continue
            lines = lines[-LOG_TAIL_LINES:]
            print(f"----- {name}: last {len(lines)} lines of {path} -----", flush=True)
            print("\n".join(lines), flush=True)


def signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def last_error(path):
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    errors = [line.strip() for line in lines if re.match(r"\s*\w+(Error|Exception)\b", line)]
    return errors[-1] if errors else None


def start_redis(stack):
    binary = shutil.which("redis-server")
    if not binary:
        raise CheckFailed("no redis-server on PATH: install Redis (Debian: apt-get install "
                          "redis-server); the check never uses a Redis it did not start")
    port = free_port()
    workdir = stack.workdir / "redis"
    workdir.mkdir()
    process = stack.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                          os.environ)
    deadline = time.monotonic() + 15
    while not answers("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise CheckFailed(f"redis-server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    say(f"Redis: started its own on 127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}/0"


def start_clamd(stack):
    if not clamd_local.clamd_binary():
        say("clamd: not installed; the built-in hash-signature scanner will run")
        return None
    try:
        process, sock = clamd_local.start(stack.workdir / "clamd")
    except RuntimeError as error:
        say(f"clamd: could not start ({str(error).splitlines()[0]}); "
            "the built-in hash-signature scanner will run")
        return None
    stack.adopt("clamd", process)
    say(f"clamd: started with the project's signatures at {sock}")
    return str(sock)


def postgres(venv, sql):
    snippet = ("import sys, psycopg2\n"
               "connection = psycopg2.connect(sys.argv[1])\n"
               "connection.autocommit = True\n"
               "connection.cursor().execute(sys.argv[2])\n")
    return subprocess.run([str(venv / "bin" / "python"), "-c", snippet, POSTGRES_ADMIN_URL, sql],
                          capture_output=True, text=True, timeout=30)


def choose_database(stack, venv):
    if answers("127.0.0.1", 5432):
        name = f"procfile_check_{uuid.uuid4().hex[:12]}"
        created = postgres(venv, f"CREATE DATABASE {name}")
        if created.returncode == 0:
            stack.database_to_drop = name
            say(f"database: PostgreSQL {name} on 127.0.0.1:5432 (dropped afterwards)")
            return f"postgresql://postgres@127.0.0.1:5432/{name}"
        reason = (created.stderr.strip().splitlines() or ["no output"])[-1]
        say(f"database: PostgreSQL on 127.0.0.1:5432 refused CREATE DATABASE ({reason}); "
            "using SQLite")
    path = stack.workdir / "submissions.db"
    say(f"database: SQLite at {path}")
    return f"sqlite:///{path}"


def drop_database(stack):
    if stack.database_to_drop:
        dropped = postgres(stack.venv, f"DROP DATABASE IF EXISTS {stack.database_to_drop}")
        if dropped.returncode:
            say(f"could not drop database {stack.database_to_drop}: {dropped.stderr.strip()}")


def production_env(stack, venv):
    home = stack.workdir / "home"
    tmp = stack.workdir / "tmp"
    home.mkdir()
    tmp.mkdir()
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        # gunicorn keeps its control socket under HOME; nothing may land in the real one.
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "PORT": str(port),
        "STORAGE_DIR": str(stack.workdir / "storage"),
        "REDIS_URL": start_redis(stack),
        "DATABASE_URL": choose_database(stack, venv),
        # The config file binds 0.0.0.0; the environment, read after it, keeps us on loopback.
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
    }
    sock = start_clamd(stack)
    if sock:
        env["CLAMD_SOCKET"] = sock
    return env


def run_release(stack, line, env):
    say(f"release: {line}")
    process = stack.start_line("release", line, env)
    try:
        status = process.wait(RELEASE_SECONDS)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"release did not finish within {RELEASE_SECONDS} s") from None
    if status:
        raise failure("release", status, stack)
    say("release: finished")


def failure(name, status, stack):
    error = last_error(stack.log_path(name))
    return CheckFailed(f"{name} exited with status {status}" + (f": {error}" if error else ""))


def check_alive(stack):
    for name, status in stack.exited(SERVICES):
        raise failure(name, status, stack)


def request(method, url, token=None, body=None, content_type=None, timeout=10):
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    try:
        with HTTP.open(urllib.request.Request(url, body, headers, method=method),
                       timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until_ready(stack, base):
    deadline = time.monotonic() + READY_SECONDS
    answer = "no answer"
    while time.monotonic() < deadline:
        check_alive(stack)
        try:
            status, _, body = request("GET", f"{base}/readyz", timeout=3)
        except OSError as error:
            answer = f"no answer ({error})"
        else:
            answer = f"{status} {body.decode(errors='replace')}"
            if status == 200:
                say(f"web: /readyz {answer.strip()}")
                return
        time.sleep(0.3)
    raise CheckFailed(f"web was not ready within {READY_SECONDS} s; /readyz: {answer}")


def flask(venv, env, *args):
    done = subprocess.run([str(venv / "bin" / "flask"), "--app", "wsgi", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise CheckFailed(f"flask {' '.join(args[:1])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# seed-demo is refused in production; a course and an assignment the student is enrolled in.
ASSIGNMENT_SNIPPET = """
import sys
from datetime import timedelta
from app import create_app
from app.extensions import db
from app.models import Assignment, Course, Enrollment, User, utcnow

with create_app().app_context():
    student = db.session.execute(db.select(User).filter_by(email=sys.argv[1])).scalar_one()
    course = Course(code="CHECK101", title="Procfile check")
    assignment = Assignment(course=course, title="Boot check", allowed_types="txt",
                            due_at=utcnow() + timedelta(days=1))
    db.session.add_all([course, assignment, Enrollment(user=student, course=course)])
    db.session.commit()
    print(assignment.id)
"""


def create_student_and_assignment(venv, env):
    email, password = "procfile-check@example.edu", secrets.token_urlsafe(12)
    flask(venv, env, "create-user", "--email", email, "--password", password, "--role",
          "student")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", ASSIGNMENT_SNIPPET, email],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise CheckFailed(f"creating the assignment failed:\n{done.stderr}")
    assignment_id = int(done.stdout.split()[-1])
    say(f"created student {email} and assignment {assignment_id}")
    return email, password, assignment_id


def multipart(filename, content):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload_and_follow(stack, base, email, password, assignment_id):
    status, _, body = request("POST", f"{base}/api/v1/tokens",
                              body=json.dumps({"email": email, "password": password}).encode(),
                              content_type="application/json")
    if status != 201:
        raise CheckFailed(f"POST /api/v1/tokens answered {status}: {body[:500]!r}")
    token = json.loads(body)["token"]
    essay = b"An essay submitted by the Procfile check, to see every step run in production.\n"
    status, headers, body = request(
        "POST", f"{base}/api/v1/assignments/{assignment_id}/submissions", token,
        *multipart("essay.txt", essay))
    if status != 202:
        raise CheckFailed(f"upload answered {status}: {body[:500]!r}")
    submission = json.loads(body)
    say(f"upload: 202, submission {submission['id']} {submission['status']} "
        f"(Location {headers['Location']})")
    deadline = time.monotonic() + COMPLETED_SECONDS
    shown = None
    while True:
        check_alive(stack)
        status, _, body = request("GET", f"{base}/api/v1/submissions/{submission['id']}", token)
        if status != 200:
            raise CheckFailed(f"GET /api/v1/submissions/{submission['id']} answered {status}: "
                              f"{body[:500]!r}")
        submission = json.loads(body)
        progress = f"{submission['status']}: " + ", ".join(
            f"{step['name']} {step['status']}" for step in submission["steps"])
        if progress != shown:
            say(f"submission {submission['id']} {progress}")
            shown = progress
        if submission["status"] == "completed":
            for step in submission["steps"]:
                say(f"  {step['name']}: {step['detail']}")
            return
        if submission["status"] in ("rejected", "needs_attention"):
            raise CheckFailed(f"submission ended {submission['status']}: "
                              f"{submission['status_detail']} {submission['steps']}")
        if time.monotonic() > deadline:
            raise CheckFailed(f"submission not completed within {COMPLETED_SECONDS} s "
                              f"({progress})")
        time.sleep(0.5)


def check(stack):
    processes = read_procfile()
    venv = stack.venv = ensure_venv()
    env = production_env(stack, venv)
    run_release(stack, processes["release"], env)
    for name in SERVICES:
        say(f"{name}: {processes[name]}")
        stack.start_line(name, processes[name], env)
    base = f"http://127.0.0.1:{env['PORT']}"
    wait_until_ready(stack, base)
    upload_and_follow(stack, base, *create_student_and_assignment(venv, env))
    check_alive(stack)


def interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main():
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    stack = Stack(Path(tempfile.mkdtemp(prefix="procfile-check-")))
    outcome, code = "passed", 0
    try:
        check(stack)
    except CheckFailed as error:
        outcome, code = f"FAILED: {error}", 1
        stack.print_logs()
    except (KeyboardInterrupt, Interrupted):
        outcome, code = "interrupted", 130
    finally:
        # Stopping is bounded (STOP_SECONDS per group); a second Ctrl-C must not cut it short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        # The app first, while its database, Redis and clamd still answer.
        stack.stop(SERVICES)
        drop_database(stack)
        stack.stop()
        shutil.rmtree(stack.workdir, ignore_errors=True)
    say(f"procfile check {outcome} (total {time.monotonic() - STARTED:.1f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
