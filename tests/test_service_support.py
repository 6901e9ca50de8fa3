"""Helpers for the tests that run ``pybmpmon serve`` as operators run it.

:class:`Serve` starts the collector as a subprocess (``python -m pybmpmon
serve``) against a database of the conftest fixtures, in a temporary
directory (no developer .env is read), and collects its JSON log lines from
stdout; the ``serve_factory`` fixture stops (SIGTERM, then SIGKILL) every one
it started.  Routers are played over TCP on 127.0.0.0/8 only, each posing with
its own source address (127.0.0.x).  The other helpers say what a capture of
../shared/corpus holds (from its manifest) and break a message of a stream in
a controlled way.

This module has no tests of its own; test_service.py, test_service_config.py,
test_service_sentry.py and test_collector.py use it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from pybmpmon.bmp.model import PeerDown, RouteMonitoring
from pybmpmon.config import SETTINGS
from pybmpmon.replay import replay
from pybmpmon.session import RouterSession

ROOT = Path(__file__).resolve().parent.parent
VIEWS = {"pre_policy": "adj_in_pre", "post_policy": "adj_in_post", "loc_rib": "loc_rib"}
FAMILIES = {"l2vpn_evpn": "evpn"}
GARBAGE = b"GET / HTTP/1.1\r\nHost: bmp.example\r\nUser-Agent: not-a-router\r\n\r\n"


def _corpus() -> Path:
    for candidate in (os.environ.get("PYBMPMON_CORPUS"),
                      Path(__file__).resolve().parents[2] / "shared" / "corpus"):
        if candidate and list(Path(candidate).glob("*.bmp")):
            return Path(candidate)
    # Not a skip: without the captures these tests would pass vacuously.
    raise RuntimeError("no BMP captures: set PYBMPMON_CORPUS to the shared corpus directory")


CORPUS = _corpus()


# --- the collector process -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(dsn: str, password: str | None = None) -> str:
    """The conftest's libpq DSN as a DATABASE_URL (optionally with a password, which the
    test server's trust authentication ignores: a secret that must never be logged)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    userinfo = params.get("user", "postgres") + (f":{password}" if password else "")
    return (f"postgresql://{userinfo}@{params.get('host', '127.0.0.1')}:"
            f"{params.get('port', 5432)}/{params['dbname']}")


def service_env(**values: str) -> dict:
    """The test's environment without any pybmpmon setting, plus ``values``."""
    names = {setting.name for setting in SETTINGS}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


class Serve:
    """``pybmpmon serve`` in a subprocess, its JSON log lines collected as they come.

    Runs in ``cwd`` (a temporary directory: no .env of the developer is read).
    """

    def __init__(self, cwd: Path, dsn: str | None = None, password: str | None = None,
                 start_timeout: float = 60.0, **settings: str):
        self.port = free_port()
        values = {
            "BMP_LISTEN_HOST": "127.0.0.1",
            "BMP_LISTEN_PORT": str(self.port),
            "LOG_FORMAT": "json",
            "STATS_INTERVAL": "1",
            "BATCH_TIMEOUT": "0.2",
            "SHUTDOWN_TIMEOUT": "20",
        }
        if dsn is not None:
            values["DATABASE_URL"] = database_url(dsn, password)
        values.update(settings)
        self.settings = values
        self.records: list[dict] = []
        self.bad_lines: list[str] = []
        self.stderr: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pybmpmon", "serve"], cwd=cwd, env=service_env(**values),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        try:
            self.wait_for("pybmpmon_listening", timeout=start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                try:
                    record = json.loads(text)
                    if not isinstance(record, dict):
                        raise ValueError(text)
                    self.records.append(record)
                except ValueError:
                    self.bad_lines.append(text)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            with self.cond:
                self.stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def find(self, event: str, where=None, **fields) -> list[dict]:
        """Records of ``event`` whose fields equal ``fields`` (and ``where(record)``)."""
        with self.cond:
            return [r for r in self.records
                    if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
                    and (where is None or where(r))]

    def wait_for(self, event: str, timeout: float = 30.0, count: int = 1, where=None,
                 **fields) -> dict:
        """The first record of ``event`` matching ``fields`` and ``where`` (waiting for
        ``count`` of them)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.find(event, where, **fields)
                if len(found) >= count:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reading()):
                    raise AssertionError(
                        f"no {count} {event} {fields} within {timeout} s; exit status "
                        f"{self.proc.poll()}\n{self.dump()}")
                self.cond.wait(min(left, 0.1))

    def _reading(self) -> bool:
        return self._threads[0].is_alive()

    def dump(self, last: int = 40) -> str:
        with self.cond:
            lines = [json.dumps(r) for r in self.records[-last:]] + self.bad_lines[-10:]
            return "\n".join(lines + ["stderr:"] + self.stderr[-20:])

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit status (SIGKILL and a failure when it does not stop in time)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"serve ignored SIGTERM for {timeout} s\n{self.dump()}")
        self.join()
        return status

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.join()
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def serve_factory(tmp_path):
    """serve_factory(dsn, **settings) -> a running :class:`Serve`, stopped at teardown."""
    started: list[Serve] = []

    def start(dsn=None, **settings) -> Serve:
        server = Serve(tmp_path, dsn, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# --- routers -----------------------------------------------------------------------------


def private_database(make_local_pg, name: str) -> tuple:
    """(a private server the test may stop, the DSN of database ``name`` in it, migrated)."""
    import psycopg2

    from pybmpmon.store.migrate import migrate

    server = make_local_pg()
    server.wait_ready()
    admin = psycopg2.connect(server.dsn())
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    admin.close()
    dsn = server.dsn(name)
    migrate(dsn)
    return server, dsn


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


def replay_from(source: str, name: str, target: str) -> threading.Thread:
    """Replay a corpus capture from ``source`` in a thread (pybmpmon replay --source)."""
    errors: list = []

    def run():
        try:
            with open(CORPUS / f"{name}.bmp", "rb") as stream:
                replay(stream, target, source=source)
        except Exception as exc:  # reported by join_all
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_all(threads, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), "a sender did not finish"
        assert not thread.errors, thread.errors


def query(dsn: str, sql: str, *params) -> list:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def poll(fetch, until, timeout: float, interval: float = 0.05):
    """Call ``fetch()`` until ``until(value)``; the last value (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- what a capture holds ----------------------------------------------------------------


def manifest(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text())["bmp_summary"][0]


def expected_history(summary: dict) -> Counter:
    """(rib, afi_safi, is_withdrawn) -> rows of route_updates, from the manifest's
    independent decoder."""
    expected: Counter = Counter()
    for view, counts in summary["prefixes_by_view"].items():
        for key, count in counts.items():
            family, action = key.split(":")
            expected[(VIEWS[view], FAMILIES.get(family, family), action == "withdraw")] += count
    return expected


def manifest_peer(text: str) -> tuple:
    """"global|0|127.0.0.12|65001" -> ("127.0.0.12", 65001)."""
    _, _, address, asn = text.split("|")
    return address, int(asn)


def expected_families(summary: dict) -> dict:
    """afi_safi -> routes (announced and withdrawn) that route_stats counts."""
    families: Counter = Counter()
    for (_, family, _), count in expected_history(summary).items():
        families[family] += count
    return dict(families)


def reference_current(events) -> Counter:
    """(rib, afi_safi) -> present routes after a plain in-memory replay of ``events``
    (a Peer Down withdraws every view of its peer)."""
    state = set()
    for event in events:
        if isinstance(event, PeerDown):
            peer = (str(event.peer.address), event.peer.distinguisher)
            state = {key for key in state if key[:2] != peer}
        if not isinstance(event, RouteMonitoring):
            continue
        base = (str(event.peer.address), event.peer.distinguisher, event.peer.rib)
        for route_set in event.update.withdrawn:
            for nlri in route_set.nlri:
                state.discard(base + (route_set.afi_safi, nlri.key, nlri.path_id or 0))
        for route_set in event.update.announced:
            for nlri in route_set.nlri:
                state.add(base + (route_set.afi_safi, nlri.key, nlri.path_id or 0))
    return Counter((key[2], key[3]) for key in state)


def synthetic_table(v4: int, v6: int) -> tuple[Path, dict]:
    """(path, expected counts) of bench/synth.py's table, generated once and cached."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import synth
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return synth.cached_stream(v4, v6)


class Sender(threading.Thread):
    """Streams a file from ``source`` as fast as the station reads it; a connection the
    station closes or resets ends it quietly (``error`` says why)."""

    def __init__(self, source: str, port: int, path: Path, chunk: int = 256 * 1024):
        super().__init__(daemon=True)
        self.sock = connect_from(source, port, timeout=60)
        self.path = path
        self.chunk = chunk
        self.sent = 0
        self.error: Exception | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with open(self.path, "rb") as stream:
                while data := stream.read(self.chunk):
                    self.sock.sendall(data)
                    self.sent += len(data)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.recv(1)  # until the station closes its side
        except OSError as exc:
            self.error = exc
        finally:
            self.sock.close()
            self.done.set()


def decode_capture(data: bytes) -> list:
    session = RouterSession()
    events = session.feed(data)
    assert session.error is None
    return events


# --- a content error inside a valid stream ----------------------------------------------


def messages_of(data: bytes) -> list:
    """(offset, length, type) of each BMP message of a raw stream."""
    out, pos = [], 0
    while pos < len(data):
        _, length, kind = struct.unpack_from("!BIB", data, pos)
        out.append((pos, length, kind))
        pos += length
    return out


def origin_value_offset(data: bytes, pos: int, length: int):
    """Where the ORIGIN value of the BMP message at ``pos`` is, when that message is a
    Route Monitoring whose UPDATE announces IPv4 NLRI; else None."""
    if data[pos + 5] != 0:
        return None
    bgp = pos + 48
    (withdrawn,) = struct.unpack_from("!H", data, bgp + 19)
    attrs = bgp + 21 + withdrawn
    (attrs_len,) = struct.unpack_from("!H", data, attrs)
    if pos + length - (attrs + 2 + attrs_len) <= 0:
        return None  # no IPv4 NLRI in this UPDATE
    cursor, end = attrs + 2, attrs + 2 + attrs_len
    while cursor < end:
        flags, code = data[cursor], data[cursor + 1]
        if flags & 0x10:
            (value_len,) = struct.unpack_from("!H", data, cursor + 2)
            value = cursor + 4
        else:
            value_len, value = data[cursor + 2], cursor + 3
        if code == 1 and value_len == 1:
            return value
        cursor = value + value_len
    return None


def corrupt_origin(data: bytes, index: int = 0) -> tuple[bytes, int, int]:
    """The stream with the ORIGIN value of its ``index``-th IPv4 UPDATE that announces
    routes set to 7 (RFC 4271 §4.3 allows 0-2: an RFC 7606 treat-as-withdraw error
    inside perfectly valid framing); returns (stream, message offset, message length)."""
    seen = 0
    for pos, length, _ in messages_of(data):
        value = origin_value_offset(data, pos, length)
        if value is None:
            continue
        if seen == index:
            broken = bytearray(data)
            broken[value] = 7
            return bytes(broken), pos, length
        seen += 1
    raise AssertionError("no IPv4 UPDATE with an ORIGIN attribute in the capture")
