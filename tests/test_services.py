"""The suite's private servers stay private when several test runs share the machine (make test
runs its passes side by side): a port one run holds is never handed to another, and a Redis
counts as started only when it is the one answering."""

import subprocess
import sys
import time

import pytest
import redis

from tests import services
from tests.conftest import ROOT
from tests.services import RedisServer, free_port, redis_binary

# Ten ports of the suite's range, for the test to reserve from.
SMALL_RANGE = range(31990, 32000)
HOLD_PORTS = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests import services
services.PORTS = range({SMALL_RANGE.start}, {SMALL_RANGE.stop})
ports = []
for _ in range(2 * len(services.PORTS)):
    try:
        ports.append(services.free_port())
    except RuntimeError:
        break
print(" ".join(map(str, ports)), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def other_run():
    """Another test run, holding every port of SMALL_RANGE it could get until it ends."""
    with subprocess.Popen([sys.executable, "-c", HOLD_PORTS], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as process:
        held = {int(port) for port in process.stdout.readline().split()}
        yield process, held
        process.stdin.close()  # the run ends


def test_a_port_another_run_holds_is_never_handed_out_until_that_run_ends(
        monkeypatch, other_run):
    process, held = other_run
    assert held, "the other run got no port at all"
    monkeypatch.setattr(services, "PORTS", SMALL_RANGE)
    mine = set()
    for _ in range(2 * len(SMALL_RANGE)):
        try:
            mine.add(free_port())
        except RuntimeError:
            break
    assert not mine & held

    process.stdin.close()
    process.wait(10)
    assert free_port() in held


def test_a_port_is_handed_out_once_in_a_run():
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port in services.PORTS for port in ports)


def test_a_redis_whose_port_was_taken_first_starts_on_another_and_answers_as_itself(tmp_path):
    first = RedisServer(tmp_path / "first").start()
    try:
        second = RedisServer(tmp_path / "second")
        second.port = first.port  # taken between choosing the port and starting on it
        second.start()
        try:
            assert second.port != first.port
            with redis.Redis.from_url(second.url) as client:
                assert client.info("server")["process_id"] == second.process.pid
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_redis_restarted_on_a_port_taken_meanwhile_fails_instead_of_sharing(tmp_path):
    server = RedisServer(tmp_path / "server").start()
    server.stop()
    stranger = subprocess.Popen(
        [redis_binary(), "--port", str(server.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis.Redis.from_url(server.url) as client:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        with pytest.raises(RuntimeError, match="could not start again"):
            server.start()
    finally:
        stranger.terminate()
        stranger.wait(10)
