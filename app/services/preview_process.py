"""Previews drawn in a child process that a worker keeps across jobs. Pillow and pdfium run C
code that a timeout alarm cannot interrupt: a file that makes them hang is stopped by killing
the child, and the next preview starts a new one. Kept rather than forked per job, a preview
costs a message each way instead of a fork and a new database connection."""

import atexit
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

from app.services import thumbnails

# Where `python -m` finds this module, whatever the worker's working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The child is replaced after this many previews, so whatever the C libraries leave behind
# cannot add up.
RENDERS_PER_PROCESS = 500


class PreviewTimeout(Exception):
    """Drawing took longer than a preview may; the child drawing it was stopped."""


class PreviewFailed(Exception):
    """The preview could not be drawn for a reason other than the file's nature (the stored
    file missing, the child gone); trying again may help."""


class PreviewProcess:
    def __init__(self, renders_per_process=RENDERS_PER_PROCESS):
        self.renders_per_process = renders_per_process
        self.process = None
        self._connection = None
        self._renders = 0
        self._stopped_at_exit = False

    def render(self, path, content_type, filename, target, timeout):
        """thumbnails.render in the child: returns the kind of preview, raises NoPreview as it
        does, PreviewTimeout after `timeout` seconds, PreviewFailed for anything else."""
        connection = self.start()
        try:
            connection.send((str(path), content_type, filename, str(target)))
            if not connection.poll(timeout):
                raise PreviewTimeout(f"drawing the preview took over {timeout} s; it was stopped")
            outcome, value = connection.recv()
        except (EOFError, OSError) as exc:
            self.stop()
            raise PreviewFailed(f"the preview process ended unexpectedly ({exc!r})") from None
        except BaseException:
            # Our timeout or the job's own: what the child is doing is unknown, so it goes.
            self.stop()
            raise
        self._renders += 1
        if self._renders >= self.renders_per_process:
            self.stop()
        if outcome == "ok":
            return value
        if outcome == "no_preview":
            raise thumbnails.NoPreview(value)
        raise PreviewFailed(value)

    def stop(self):
        if self.process is None:
            return
        self._connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = self._connection = None
        self._renders = 0

    def start(self):
        """The child, started if it is not running; returns the connection to it."""
        if self.process is not None and self.process.poll() is None:
            return self._connection
        self.stop()
        # A new interpreter, not a fork: the worker has threads (heartbeats) and connections
        # a fork would copy mid-use.
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT)
            self._connection = Connection(ours.detach())
        if not self._stopped_at_exit:
            atexit.register(self.stop)
            self._stopped_at_exit = True
        return self._connection


def _serve(connection):
    # The worker's stop signal reaches every process of the dyno: the preview under way
    # finishes, and the child ends when the worker closes its end of the pipe.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            path, content_type, filename, target = connection.recv()
        except EOFError:
            return
        try:
            connection.send(("ok", thumbnails.render(path, content_type, filename, target)))
        except thumbnails.NoPreview as reason:
            connection.send(("no_preview", str(reason)))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
