"""A private clamd for the suite: the project's signatures, its own unix socket and TCP port in a
temporary directory, so nothing touches a clamd the machine may already run."""

import shutil
from pathlib import Path

import pytest

from scripts import clamd_local
from tests.services import free_port


class ClamdServer:
    def __init__(self, workdir, **settings):
        self.workdir = workdir
        self.settings = settings
        self.port = free_port()
        self.process = None
        self.socket = None

    @property
    def url(self):
        return f"tcp://127.0.0.1:{self.port}"

    def start(self):
        if not clamd_local.clamd_binary():
            pytest.skip("clamd is not installed (apt-get install clamav-daemon)")
        self.process, self.socket = clamd_local.start(
            self.workdir, tcp_port=self.port, **self.settings)
        return self

    def stop(self):
        if self.process is not None:
            clamd_local.stop(self.process)
        # A workdir too deep for a unix socket got a short-lived folder of its own in /tmp.
        if self.socket is not None and self.socket.parent != Path(self.workdir).resolve():
            shutil.rmtree(self.socket.parent, ignore_errors=True)
