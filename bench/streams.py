"""Event-stream clients, run as their own process: `python -m bench.streams SPEC OUT`.

Opens every stream in SPEC (a request path and headers each), at most `connect_at_once` at a
time, then prints "ready OPENED FAILED" and listens. A stream counts as open when its response
headers arrive, or, with `headers_first` false, once its request is sent. Each event's data
carries the wall-clock time it was published (`sent_at`) and a sequence number (`seq`); the
time a chunk is read is its receipt time. On "stop" (a line on stdin) or after `max_seconds`,
writes OUT: for each sequence number the publish-to-receipt latencies, one per stream that
received it.
"""

import asyncio
import json
import sys
import time
from pathlib import Path


async def follow(port, stream, gate, opened, failures, received, headers_first):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
            headers = "".join(f"{name}: {value}\r\n" for name, value in stream["headers"].items())
            # HTTP/1.0, so the body arrives unchunked, as the bare event stream.
            writer.write((f"GET {stream['path']} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                          f"Accept: text/event-stream\r\n{headers}\r\n").encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n") if headers_first else None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            return
    try:
        if head is None:
            # Stock flask-sse sends its headers with the first event, not when it subscribes.
            opened.append(1)
            head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        if status != "200":
            failures.append(f"HTTP {status}")
            return
        if headers_first:
            opened.append(1)
        buffer = b""
        while chunk := await reader.read(65536):
            arrived = time.time()
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                data = event_data(block)
                if data is not None and "seq" in data:
                    received.setdefault(data["seq"], []).append(arrived - data["sent_at"])
    except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


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
    gate = asyncio.Semaphore(spec["connect_at_once"])
    opened, failures, received = [], [], {}
    tasks = [asyncio.create_task(follow(spec["port"], stream, gate, opened, failures, received,
                                        spec["headers_first"]))
             for stream in spec["streams"]]
    deadline = time.monotonic() + spec["max_seconds"]
    while len(opened) + len(failures) < len(tasks) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"ready {len(opened)} {len(failures)}", flush=True)
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await asyncio.wait_for(stdin.readline(), max(1, deadline - time.monotonic()))
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    Path(out_path).write_text(json.dumps({
        "opened": len(opened), "failures": failures[:20], "failed": len(failures),
        "received": received,
    }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
