"""Stand-ins for outside services we cannot run ourselves (Turnitin, the student-records
system): small HTTP servers on 127.0.0.1 speaking those services' protocols, with faults that
can be switched on (error answers, rate limits, slow answers).

Control endpoints, on every simulator:
  POST   /_sim/faults  {"status": 500, "times": 2, "retry_after": "3", "delay": 1.5,
                        "method": "PUT", "path": "/original"}   queue a fault
  DELETE /_sim/faults                                            clear queued faults
  GET    /_sim/state                                             what the simulator holds
A fault with a status answers with it instead of serving the request; a fault with only a
delay serves the request, then waits before answering (a slow service, or with a short client
timeout, an answer lost after the work was done).
"""

import argparse
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUS_TEXT = {401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class Fault:
    status: int | None = None
    times: int = 1
    retry_after: str | None = None
    delay: float = 0.0
    method: str | None = None
    path: str | None = None  # matches requests whose path contains this

    def matches(self, method, path):
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path in path))


@dataclass
class Reply:
    status: int
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    status: int
    received_at: float
    answered_at: float = 0.0


class Simulator:
    """A threaded HTTP server; subclasses answer requests in `handle` and describe what they
    hold in `state`."""

    def __init__(self, host="127.0.0.1", port=0):
        self.lock = threading.RLock()
        self.faults = []
        self.seen = []
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def serve_forever(self):
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def inject(self, status=None, times=1, retry_after=None, delay=0.0, method=None, path=None):
        with self.lock:
            self.faults.append(Fault(status, times, None if retry_after is None
                                     else str(retry_after), delay, method, path))

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def requests(self, method=None, path=None):
        with self.lock:
            return [s for s in self.seen
                    if (method is None or s.method == method) and (path is None or path in s.path)]

    def handle(self, method, path, headers, body):
        raise NotImplementedError

    def state(self):
        return {}

    def dispatch(self, method, path, headers, body):
        if path.startswith("/_sim/"):
            return self._control(method, path, body), None
        seen = Seen(method, path, 0, time.time())
        fault = self._take_fault(method, path)
        if fault is not None and fault.status is not None:
            reply = Reply(fault.status, {"message": STATUS_TEXT.get(fault.status, "Fault")},
                          {"Retry-After": fault.retry_after} if fault.retry_after else {},
                          delay=fault.delay)
        else:
            with self.lock:
                reply = self.handle(method, path, headers, body)
            reply.delay = fault.delay if fault is not None else 0.0
        seen.status = reply.status
        with self.lock:
            self.seen.append(seen)
        return reply, seen

    def _take_fault(self, method, path):
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _control(self, method, path, body):
        if path == "/_sim/faults" and method == "POST":
            try:
                self.inject(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as exc:
                return Reply(400, {"message": f"bad fault: {exc}"})
            return Reply(201, {"faults": [asdict(f) for f in self.faults]})
        if path == "/_sim/faults" and method == "DELETE":
            self.clear_faults()
            return Reply(204)
        if path == "/_sim/state" and method == "GET":
            with self.lock:
                return Reply(200, {"requests": len(self.seen),
                                   "faults": [asdict(f) for f in self.faults], **self.state()})
        return Reply(404, {"message": "unknown control endpoint"})


def _handler_for(simulator):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply, seen = simulator.dispatch(self.command, self.path, self.headers, body)
            if reply.delay:
                time.sleep(reply.delay)
            payload = json.dumps(reply.body).encode() if reply.body is not None else b""
            if seen is not None:
                seen.answered_at = time.time()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller stopped waiting, as a client with a timeout does

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args):
            pass  # requests are kept in `seen` and shown by /_sim/state

    return Handler


def command_line(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser
