"""Event-stream clients, run as their own process: `python -m bench.streams SPEC OUT`.

Opens every stream in SPEC (a request path and headers each), at most `connect_at_once` at a
time, then prints "ready OPENED FAILED" and listens. A stream counts as open when its response
headers arrive, or, with `headers_first` false, once its request is sent. Each event's data
carries the wall-clock time it was published (`sent_at`) and a sequence number (`seq`); the
time a chunk is read is its receipt time. Once every open stream has received `events` events,
on "stop" (a line on stdin), or after `max_seconds`, it writes OUT: for each sequence number the
publish-to-receipt latencies, one per stream that received it, and how many streams the server
ended early; then exits.
"""

import asyncio
import json
import sys
import time
from pathlib import Path


class Listeners:
    def __init__(self, spec):
        self.port = spec["port"]
        self.headers_first = spec["headers_first"]
        self.events = spec["events"]
        self.gate = asyncio.Semaphore(spec["connect_at_once"])
        self.opened = 0
        self.failures = []
        self.received = {}
        self.complete = 0
        self.ended = 0  # streams the server closed while we still listened
        self.all_received = asyncio.Event()

    async def follow(self, stream):
        async with self.gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                               limit=2**20)
                headers = "".join(f"{name}: {value}\r\n"
                                  for name, value in stream["headers"].items())
                # HTTP/1.0, so the body arrives unchunked, as the bare event stream.
                writer.write((f"GET {stream['path']} HTTP/1.0\r\nHost: 127.0.0.1:{self.port}\r\n"
                              f"Accept: text/event-stream\r\n{headers}\r\n").encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n") if self.headers_first else None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
        try:
            if head is None:
                # Stock flask-sse sends its headers with the first event, not when it subscribes.
                self.opened += 1
                head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                self.failures.append(f"HTTP {status}")
                return
            if self.headers_first:
                self.opened += 1
            await self.listen(reader)
            self.ended += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def listen(self, reader):
        buffer, count = b"", 0
        while chunk := await reader.read(65536):
            arrived = time.time()
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                data = event_data(block)
                if data is None or "seq" not in data:
                    continue
                self.received.setdefault(data["seq"], []).append(arrived - data["sent_at"])
                count += 1
                if count == self.events:
                    self.complete += 1
                    if self.complete >= self.opened:
                        self.all_received.set()


def event_data(block):
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


async def main(spec_path, out_path):
    spec = json.loads(Path(spec_path).read_text())
    listeners = Listeners(spec)
    tasks = [asyncio.create_task(listeners.follow(stream)) for stream in spec["streams"]]
    deadline = time.monotonic() + spec["max_seconds"]
    while (listeners.opened + len(listeners.failures) < len(tasks)
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    print(f"ready {listeners.opened} {len(listeners.failures)}", flush=True)
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    waits = [asyncio.create_task(stdin.readline()),
             asyncio.create_task(listeners.all_received.wait())]
    await asyncio.wait(waits, timeout=max(1, deadline - time.monotonic()),
                       return_when=asyncio.FIRST_COMPLETED)
    for task in tasks + waits:
        task.cancel()
    await asyncio.gather(*tasks, *waits, return_exceptions=True)
    Path(out_path).write_text(json.dumps({
        "opened": listeners.opened, "failures": listeners.failures[:20],
        "failed": len(listeners.failures), "ended": listeners.ended,
        "received": listeners.received,
    }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
