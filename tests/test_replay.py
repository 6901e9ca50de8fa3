"""pybmpmon replay: a recorded stream arrives byte for byte, paced when asked."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pybmpmon.replay import ReplayError, parse_target, replay

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


class Sink:
    """A TCP listener on loopback that keeps everything it receives."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.server.accept()
        with conn:
            while chunk := conn.recv(65536):
                self.data += chunk
        self.server.close()

    def wait(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return bytes(self.data)


def test_replay_sends_the_capture_byte_for_byte():
    capture = (CORPUS / "gobgp-all-1.bmp").read_bytes()
    sink = Sink()
    with open(CORPUS / "gobgp-all-1.bmp", "rb") as stream:
        messages, sent = replay(stream, f"127.0.0.1:{sink.port}")
    assert sink.wait() == capture
    assert (messages, sent) == (1277, len(capture))  # the manifest's messages_total


def test_rate_paces_messages():
    sink = Sink()
    with open(CORPUS / "gobgp-both-small-1.bmp", "rb") as stream:
        started = time.monotonic()
        messages, _ = replay(stream, f"127.0.0.1:{sink.port}", rate=100.0)
        elapsed = time.monotonic() - started
    sink.wait()
    assert elapsed >= (messages - 1) / 100.0 * 0.9


def test_cli_replay_and_errors(tmp_path):
    sink = Sink()
    path = CORPUS / "gobgp-pre-policy-small-1.bmp"
    run = [sys.executable, "-m", "pybmpmon", "replay"]
    done = subprocess.run(
        run + [str(path), f"127.0.0.1:{sink.port}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sink.wait() == path.read_bytes()
    assert "sent" in done.stderr

    missing = subprocess.run(
        run + [str(tmp_path / "nope.bmp"), "127.0.0.1:1"], capture_output=True, text=True
    )
    assert missing.returncode == 2

    garbage = tmp_path / "garbage.bmp"
    garbage.write_bytes(b"GET / HTTP/1.0\r\n\r\n")
    sink = Sink()
    bad = subprocess.run(
        run + [str(garbage), f"127.0.0.1:{sink.port}"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "not a BMP stream" in bad.stderr
    sink.wait()


@pytest.mark.parametrize(
    "text", ["localhost", "host:", ":11019", "host:0", "host:99999", "host:abc"]
)
def test_bad_targets(text):
    with pytest.raises(ReplayError):
        parse_target(text)


def test_targets():
    assert parse_target("127.0.0.1:11019") == ("127.0.0.1", 11019)
    assert parse_target("[::1]:11019") == ("::1", 11019)


def test_unreachable_target():
    port = socket.create_server(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    with open(CORPUS / "gobgp-both-small-1.bmp", "rb") as stream:
        with pytest.raises(ReplayError, match="cannot connect"):
            replay(stream, f"127.0.0.1:{closed}")


class Peers:
    """A loopback listener that records the source address of each connection."""

    def __init__(self, connections: int):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = []  # (source address, bytes)
        self.thread = threading.Thread(target=self._run, args=(connections,), daemon=True)
        self.thread.start()

    def _run(self, connections):
        for _ in range(connections):
            conn, address = self.server.accept()
            data = bytearray()
            with conn:
                while chunk := conn.recv(65536):
                    data += chunk
            self.received.append((address[0], bytes(data)))
        self.server.close()

    def wait(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.received


def test_source_address_poses_as_a_router():
    capture = (CORPUS / "gobgp-both-small-1.bmp").read_bytes()
    peers = Peers(2)
    with open(CORPUS / "gobgp-both-small-1.bmp", "rb") as stream:
        replay(stream, f"127.0.0.1:{peers.port}", source="127.0.0.77")
    run = [sys.executable, "-m", "pybmpmon", "replay", "--source", "127.0.0.78"]
    done = subprocess.run(run + [str(CORPUS / "gobgp-both-small-1.bmp"),
                                 f"127.0.0.1:{peers.port}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert peers.wait() == [("127.0.0.77", capture), ("127.0.0.78", capture)]


def test_source_address_that_is_not_local():
    peers = socket.create_server(("127.0.0.1", 0))
    port = peers.getsockname()[1]
    try:
        run = [sys.executable, "-m", "pybmpmon", "replay", "--source", "192.0.2.1"]
        done = subprocess.run(run + [str(CORPUS / "gobgp-both-small-1.bmp"), f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
    finally:
        peers.close()
    assert done.returncode == 1
    assert "cannot connect" in done.stderr and "from 192.0.2.1" in done.stderr
