"""Talking to the app as separate browsers do: test clients that do not share a logged-in
user, and Server-Sent Events read from a test-client response or from a socket to a real
server."""

import json
import socket
import time
from dataclasses import dataclass

from flask.testing import FlaskClient

from tests.conftest import Auth


class OwnContextClient(FlaskClient):
    """Each request in an application context of its own, as in a real server: the test's
    context would otherwise carry g, and with it the logged-in user, from one client to the next."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


def browser(app):
    return OwnContextClient(app, app.response_class, use_cookies=True)


def client_for(app, name):
    """A browser logged in as <name>@uni.test."""
    client = browser(app)
    Auth(client).login(f"{name}@uni.test")
    return client


@dataclass(frozen=True)
class Frame:
    event: str | None
    id: int | None
    data: object
    comment: str | None
    retry: int | None


def parse_frame(block):
    event = event_id = comment = retry = None
    data = []
    for line in block.split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            comment = value.strip()
        elif field == "event":
            event = value
        elif field == "id":
            event_id = int(value)
        elif field == "data":
            data.append(value)
        elif field == "retry":
            retry = int(value)
    return Frame(event, event_id, json.loads("\n".join(data)) if data else None, comment, retry)


class _FrameBuffer:
    def __init__(self):
        self.text = ""

    def feed(self, text):
        self.text += text
        *blocks, self.text = self.text.split("\n\n")
        return [parse_frame(block) for block in blocks if block]


class StreamReader:
    """Frames of a test-client /events response; each read returns by the next heartbeat."""

    def __init__(self, response):
        self.response = response
        self._chunks = iter(response.response)
        self._buffer = _FrameBuffer()
        self._ready = []
        self.frames = []

    def next_frame(self):
        while not self._ready:
            chunk = next(self._chunks)
            self._ready.extend(self._buffer.feed(chunk.decode()))
        frame = self._ready.pop(0)
        self.frames.append(frame)
        return frame

    def events(self, count, timeout=5.0):
        """The next `count` events (comments skipped); fails if they do not come in time."""
        found = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} events: {found}"
            frame = self.next_frame()
            if frame.event is not None:
                found.append(frame)
        return found

    def events_within(self, seconds):
        """Every event that arrives in the next `seconds`."""
        found = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = self.next_frame()
            if frame.event is not None:
                found.append(frame)
        return found

    def close(self):
        self.response.close()


class SocketStream:
    """An /events stream over a plain HTTP/1.0 socket, as an EventSource would hold it."""

    def __init__(self, base_url, path, headers=None):
        host, port = base_url.split("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        lines = [f"GET {path} HTTP/1.0", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buffer = _FrameBuffer()
        self._raw = b""
        self.status = None
        self.headers = {}

    def read_head(self):
        while b"\r\n\r\n" not in self._raw:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed before the headers"
            self._raw += chunk
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        pairs = (line.partition(":") for line in header_lines)
        self.headers = {name.lower(): value.strip() for name, _, value in pairs}
        return self.status

    def frames_for(self, seconds):
        """(arrival time, frame) for everything that arrives in the next `seconds`."""
        found = []
        pending = self._buffer.feed(self._raw.decode())
        self._raw = b""
        now = time.monotonic()
        found.extend((now, frame) for frame in pending)
        deadline = now + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            now = time.monotonic()
            found.extend((now, frame) for frame in self._buffer.feed(chunk.decode()))
        return found

    def events(self, count, seconds=5.0):
        """The next `count` events (comments skipped); fails if they do not come in time."""
        found = [frame for frame in self._buffer.feed(self._raw.decode()) if frame.event]
        self._raw = b""
        deadline = time.monotonic() + seconds
        while len(found) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(found)} of {count} events: {found}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, "the stream ended"
            found.extend(frame for frame in self._buffer.feed(chunk.decode()) if frame.event)
        assert len(found) == count, f"more events than expected: {found}"
        return found

    def close(self):
        self.sock.close()


def open_stream(client, *topics, headers=None, query=""):
    params = "&".join([f"topic={topic}" for topic in topics] + ([query] if query else []))
    return client.get(f"/events?{params}", headers=headers or {}, buffered=False)


def follow(client, *topics, **kwargs):
    """An open stream of these topics, past its opening frame."""
    response = open_stream(client, *topics, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    reader = StreamReader(response)
    assert reader.next_frame().retry is not None
    return reader
