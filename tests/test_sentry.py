"""pybmpmon.sentry against the real sentry-sdk and a local HTTP endpoint that records
what the SDK sends (SPEC §7, ../shared/seed/sentry.md)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sentry_sdk

from pybmpmon import __version__
from pybmpmon import sentry as report
from pybmpmon.config import Settings
from pybmpmon.errors import FramingError
from pybmpmon.logsetup import setup_logging

ROOT = Path(__file__).resolve().parent.parent
DB_PASSWORD = "Pw-4711-zebra"
URL_PASSWORD = "Url-0815-quokka"
DSN_KEY = "dsnkey0815abcdef"


# --- a Sentry endpoint ---------------------------------------------------------------


def parse_envelope(body: bytes) -> tuple[dict, list[tuple[dict, bytes]]]:
    """Envelope: a JSON header line, then items of (JSON header line, payload)."""
    head, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        item_header = json.loads(line)
        if "length" in item_header:
            payload, rest = rest[: item_header["length"]], rest[item_header["length"]:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return json.loads(head), items


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.cond = threading.Condition()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def dsn(self, key: str = DSN_KEY) -> str:
        return f"http://{key}@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict]:
        """Payloads of every "event" item received so far."""
        out = []
        for body in list(self.bodies):
            _, items = parse_envelope(body)
            out.extend(json.loads(p) for h, p in items if h.get("type") == "event")
        return out

    def event_payloads(self) -> list[bytes]:
        out = []
        for body in list(self.bodies):
            _, items = parse_envelope(body)
            out.extend(p for h, p in items if h.get("type") == "event")
        return out

    def wait_events(self, count: int, timeout: float = 10.0) -> list[dict]:
        sentry_sdk.flush(timeout=timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events()) < count and time.monotonic() < deadline:
                self.cond.wait(0.05)
        return self.events()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli  # present whenever the SDK chose brotli

            body = brotli.decompress(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        server = self.server
        with server.cond:
            server.bodies.append(body)
            server.paths.append(self.path)
            server.cond.notify_all()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Silent:
    """Accepts TCP connections and never answers: a hung Sentry."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def logs():
    """JSON log lines of the test, as dicts."""
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging("INFO", "json", stream=buf)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture(autouse=True)
def reset_sentry(monkeypatch):
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    sentry_sdk.get_isolation_scope().clear_breadcrumbs()
    yield
    sentry_sdk.get_client().close(timeout=0)
    sentry_sdk.get_global_scope().set_client(None)  # back to the SDK's no-op client
    sentry_sdk.get_isolation_scope().clear_breadcrumbs()


def settings(dsn: str, **changes) -> Settings:
    return dataclasses.replace(
        Settings(),
        sentry_dsn=dsn,
        sentry_environment="testing",
        sentry_traces_sample_rate=0.25,
        db_password=DB_PASSWORD,
        **changes,
    )


@pytest.fixture
def sentry_on(recorder, logs):
    assert report.init_sentry(settings(recorder.dsn())) is True
    return recorder


# --- start-up ------------------------------------------------------------------------------


def test_off_when_dsn_empty(logs):
    assert report.init_sentry(Settings()) is False
    assert logs() == []  # no warning either
    assert not sentry_sdk.get_client().is_active()
    assert report.capture_peer_up("192.0.2.1", "192.0.2.100", 65001) is None
    assert report.capture_parse_error("bmp_parse_error", "192.0.2.1", "x", b"\x02", None) is None


def test_initialized(sentry_on, logs):
    (line,) = [x for x in logs() if x["event"] == "sentry_initialized"]
    assert line["level"] == "INFO"
    assert line["environment"] == "testing"
    assert line["traces_sample_rate"] == 0.25
    assert line["release"] == f"pybmpmon@{__version__}"
    client = sentry_sdk.get_client()
    assert client.is_active()
    assert not client.should_send_default_pii()
    assert client.options["shutdown_timeout"] <= 2
    assert client.options["environment"] == "testing"
    assert client.options["traces_sample_rate"] == 0.25


@pytest.mark.parametrize("dsn", ["https://key@sentry.io/dev-project", "not a dsn",
                                 "ftp://key@host/1", "key@host/1", "https://key:sec@/1"])
def test_invalid_dsn_is_one_clear_error(logs, dsn):
    assert report.init_sentry(settings(dsn)) is False
    (line,) = logs()
    assert line["level"] == "ERROR"
    assert line["event"] == "sentry_invalid_dsn"
    assert line["reason"]
    assert "key@" not in json.dumps(line)
    assert not sentry_sdk.get_client().is_active()
    assert report.capture_peer_down("192.0.2.1", 1) is None


def test_sdk_not_installed_warns_and_collection_goes_on():
    code = (
        "import sys, dataclasses\n"
        "sys.modules['sentry_sdk'] = None  # the import fails as if not installed\n"
        "from pybmpmon.config import Settings\n"
        "from pybmpmon.logsetup import setup_logging\n"
        "from pybmpmon import sentry\n"
        "setup_logging('INFO', 'json')\n"
        "s = dataclasses.replace(Settings(), sentry_dsn='https://k@o0.ingest.sentry.io/1')\n"
        "print('RESULT', sentry.init_sentry(s), sentry.capture_peer_up('192.0.2.1', 'p', 1),\n"
        "      sentry.capture_route_processing_error('192.0.2.1', 'x', 1),\n"
        "      file=sys.stderr)\n"
        "sentry.shutdown_sentry()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "RESULT False None None"
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["event"] == "sentry_sdk_not_installed"
    assert line["level"] == "WARNING"


# --- the four event kinds, field by field against seed/sentry.md ----------------------------


def test_peer_up_event(sentry_on):
    event_id = report.capture_peer_up("192.0.2.1", "192.0.2.100", 65001)
    assert event_id
    (event,) = sentry_on.wait_events(1)
    assert event["event_id"] == event_id
    assert event["level"] == "info"
    assert event["message"] == (
        "BMP peer 192.0.2.1 established session with BGP peer 192.0.2.100 (AS65001)")
    assert event["tags"] == {"event_type": "peer_up", "peer_ip": "192.0.2.1"}
    assert event["contexts"]["bmp_peer"] == {
        "peer_ip": "192.0.2.1", "bgp_peer": "192.0.2.100", "bgp_peer_asn": 65001}
    assert event["environment"] == "testing"
    assert event["release"] == f"pybmpmon@{__version__}"
    assert "exception" not in event
    assert sentry_on.paths[0].startswith("/api/1/envelope/")


def test_peer_up_accepts_address_objects_and_4_byte_asn(sentry_on):
    import ipaddress

    report.capture_peer_up(ipaddress.ip_address("2001:db8::1"),
                           ipaddress.ip_address("2001:db8::2"), 4200000001)
    (event,) = sentry_on.wait_events(1)
    assert event["message"] == (
        "BMP peer 2001:db8::1 established session with BGP peer 2001:db8::2 (AS4200000001)")
    assert event["contexts"]["bmp_peer"]["bgp_peer_asn"] == 4200000001


def test_peer_down_event(sentry_on):
    report.capture_peer_down("192.0.2.1", 1)
    (event,) = sentry_on.wait_events(1)
    assert event["level"] == "warning"
    assert event["message"] == "BMP peer 192.0.2.1 disconnected (reason code: 1)"
    assert event["tags"] == {"event_type": "peer_down", "peer_ip": "192.0.2.1"}
    assert event["contexts"]["bmp_peer"] == {"peer_ip": "192.0.2.1", "reason_code": 1}
    assert "exception" not in event


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


def test_parse_error_event(sentry_on):
    data = bytes([2, 0, 0, 0, 6, 4]) + bytes(range(256)) * 4  # 1030 bytes
    exc = _raise(FramingError("Invalid BMP version: expected 3, got 2", 0))
    report.capture_parse_error("bmp_parse_error", "192.0.2.1", "Invalid BMP version", data, exc)
    (event,) = sentry_on.wait_events(1)
    assert event["level"] == "error"
    assert event["message"] == "bmp_parse_error: Invalid BMP version from 192.0.2.1"
    assert event["tags"] == {"error_type": "bmp_parse_error", "peer_ip": "192.0.2.1"}
    context = event["contexts"]["parse_error"]
    assert set(context) == {"peer_ip", "error_message", "data_hex"}
    assert context["peer_ip"] == "192.0.2.1"
    assert context["error_message"] == str(exc)
    assert len(context["data_hex"]) == 512
    assert context["data_hex"] == data.hex()[:512]
    assert context["data_hex"].startswith("02000000060400")
    (value,) = event["exception"]["values"]
    assert value["type"] == "FramingError"
    # The SDK prefers the exception's .message (DecodeError's text without the offset).
    assert value["value"] in (str(exc), exc.message)
    assert value["stacktrace"]["frames"]  # raised: the traceback is there


def test_bgp_parse_error_short_data(sentry_on):
    exc = _raise(ValueError("attribute length 9 exceeds 4"))
    report.capture_parse_error("bgp_parse_error", "198.51.100.7", "Bad attribute length",
                               memoryview(b"\xff" * 16 + b"\x00\x17\x02"), exc)
    (event,) = sentry_on.wait_events(1)
    assert event["message"] == "bgp_parse_error: Bad attribute length from 198.51.100.7"
    assert event["tags"] == {"error_type": "bgp_parse_error", "peer_ip": "198.51.100.7"}
    assert event["contexts"]["parse_error"]["data_hex"] == "ff" * 16 + "001702"
    assert event["contexts"]["parse_error"]["error_message"] == "attribute length 9 exceeds 4"
    assert event["exception"]["values"][-1]["type"] == "ValueError"


def test_route_processing_error_event(sentry_on):
    report.capture_route_processing_error("192.0.2.1", "Database connection failed", 1000)
    (event,) = sentry_on.wait_events(1)
    assert event["level"] == "error"
    assert event["message"] == "Route processing error from 192.0.2.1: Database connection failed"
    assert event["tags"] == {"error_type": "route_processing_error", "peer_ip": "192.0.2.1"}
    assert event["contexts"]["route_processing"] == {
        "peer_ip": "192.0.2.1", "error_message": "Database connection failed",
        "route_count": 1000}
    assert "exception" not in event


def test_route_processing_error_with_exception(sentry_on):
    exc = _raise(ConnectionError("Database connection failed"))
    report.capture_route_processing_error("192.0.2.1", exc, 250)
    (event,) = sentry_on.wait_events(1)
    assert event["message"] == "Route processing error from 192.0.2.1: Database connection failed"
    assert event["contexts"]["route_processing"]["route_count"] == 250
    assert event["exception"]["values"][-1]["type"] == "ConnectionError"


def test_helpers_never_raise(sentry_on, logs):
    assert report.capture_peer_up("192.0.2.1", "192.0.2.100", "not-an-asn") is None
    assert report.capture_route_processing_error("192.0.2.1", "x", object()) is None
    assert [x["event"] for x in logs()].count("sentry_capture_failed") == 2


# --- logging integration --------------------------------------------------------------------


def test_error_log_becomes_event_with_info_breadcrumbs(sentry_on):
    log = logging.getLogger("pybmpmon.collector")
    log.info("router_connected", extra={"router": "192.0.2.1"})
    log.info("bmp_peer_up", extra={"router": "192.0.2.1", "peer": "192.0.2.100"})
    log.debug("bmp_message")  # below INFO: not even a breadcrumb
    log.error("database_unavailable: %s", "connection refused", extra={"retry_seconds": 5})
    (event,) = sentry_on.wait_events(1)
    assert event["level"] == "error"
    assert event["logger"] == "pybmpmon.collector"
    assert event["logentry"]["message"] == "database_unavailable: %s"  # grouped by template
    assert event["logentry"]["params"] == ["connection refused"]
    assert event["extra"]["retry_seconds"] == 5
    crumbs = [c["message"] for c in event["breadcrumbs"]["values"]]
    assert "router_connected" in crumbs and "bmp_peer_up" in crumbs
    assert "bmp_message" not in crumbs
    assert crumbs.index("router_connected") < crumbs.index("bmp_peer_up")


def test_warning_log_is_only_a_breadcrumb(sentry_on):
    logging.getLogger("pybmpmon.x").warning("bmp_stats_unknown_counter")
    report.capture_peer_down("192.0.2.1", 2)
    (event,) = sentry_on.wait_events(1)
    assert event["level"] == "warning" and event["message"].startswith("BMP peer")
    assert "bmp_stats_unknown_counter" in [c["message"] for c in event["breadcrumbs"]["values"]]


def test_logged_parse_errors_are_reported_once(sentry_on):
    log = logging.getLogger("pybmpmon.collector")
    for name in sorted(report.REPORTED_EVENTS):
        log.error(name, extra={"router": "192.0.2.1"})
        log.error(name + ": %s", "details", extra={"router": "192.0.2.1"})
    report.capture_parse_error("bgp_parse_error", "192.0.2.1", "Bad", b"", _raise(KeyError(1)))
    time.sleep(0.2)
    events = sentry_on.wait_events(1)
    assert [e["message"] for e in events] == ["bgp_parse_error: Bad from 192.0.2.1"]
    crumbs = [c["message"] for c in events[0]["breadcrumbs"]["values"]]
    assert "route_processing_error" in crumbs


# --- secrets ------------------------------------------------------------------------------


def _connect(conn_str: str) -> None:
    password = DB_PASSWORD  # noqa: F841 - a local variable the SDK would send
    url = f"postgresql://bmp:{URL_PASSWORD}@db/x"  # noqa: F841
    raise ConnectionError(f"could not connect: {conn_str}")


def test_no_secret_leaves_the_process(recorder, logs):
    database_url = f"postgresql://bmp:{URL_PASSWORD}@db.example.net/pybmpmon"
    dsn = recorder.dsn()
    assert report.init_sentry(settings(dsn, database_url=database_url)) is True
    log = logging.getLogger("pybmpmon.store")
    log.info("database_connecting: host=db password=%s", DB_PASSWORD)  # a breadcrumb
    log.info("sentry dsn is %s", dsn)
    try:
        _connect(f"host=db user=bmp password={DB_PASSWORD}")
    except ConnectionError:
        log.exception("database_unavailable",
                      extra={"conn": database_url, "db_password": DB_PASSWORD,
                             "note": f"pw {DB_PASSWORD} and key {DSN_KEY}"})
    report.capture_route_processing_error(
        "192.0.2.1", f"connect to {database_url} failed (password {DB_PASSWORD})", 7)
    report.capture_parse_error("bmp_parse_error", "192.0.2.1", f"oops {DB_PASSWORD}",
                               DB_PASSWORD.encode(), _raise(ValueError(DSN_KEY)))
    events = recorder.wait_events(3)
    assert len(events) == 3
    everything = b"".join(recorder.bodies)
    assert DB_PASSWORD.encode() not in everything
    assert URL_PASSWORD.encode() not in everything
    # The DSN key authenticates the request (header) and names the project in the
    # envelope's trace header, as Sentry's protocol requires; it is in no event.
    for payload in recorder.event_payloads():
        assert DSN_KEY.encode() not in payload
    assert b"[Filtered]" in everything
    # Useful text survives scrubbing.
    processing = [e for e in events if e.get("message", "").startswith("Route processing")][0]
    assert processing["message"].startswith("Route processing error from 192.0.2.1: connect to")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("postgresql://bmp:hunter22@db/x", "postgresql://bmp:[Filtered]@db/x"),
        ("host=db password='a b' port=5", "host=db password=[Filtered] port=5"),
        ("token is Pw-4711-zebra!", "token is [Filtered]!"),
        ("pw", "[Filtered]"),  # short secret: only a whole value is filtered
        ("pwned", "pwned"),
        ("no secret here", "no secret here"),
    ],
)
def test_scrubber_text(value, expected):
    scrub = report.make_scrubber([DB_PASSWORD, "pw"])
    assert scrub({"message": value})["message"] == expected


def test_scrubber_keeps_code_names():
    """A password equal to the application's name filters data, not code names."""
    scrub = report.make_scrubber(["pybmpmon"])
    event = {"release": "pybmpmon@0.1.0", "logger": "pybmpmon.store",
             "message": "login pybmpmon failed",
             "exception": {"values": [{"module": "pybmpmon.errors", "stacktrace": {
                 "frames": [{"module": "pybmpmon.store", "vars": {"pw": "'pybmpmon'"}}]}}]}}
    out = scrub(event)
    assert out["release"] == "pybmpmon@0.1.0" and out["logger"] == "pybmpmon.store"
    assert out["message"] == "login [Filtered] failed"
    frame = out["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["module"] == "pybmpmon.store" and frame["vars"]["pw"] == "'[Filtered]'"


def test_scrubber_secret_keys():
    scrub = report.make_scrubber([])
    event = {"extra": {"db_password": "x", "sentry_dsn": "y", "DATABASE_URL": "z",
                       "router": "192.0.2.1", "nested": [{"api_key": "k"}]}}
    assert scrub(event)["extra"] == {
        "db_password": "[Filtered]", "sentry_dsn": "[Filtered]", "DATABASE_URL": "[Filtered]",
        "router": "192.0.2.1", "nested": [{"api_key": "[Filtered]"}]}


# --- an unreachable Sentry never slows collection ---------------------------------------------


def _capture_many(count: int = 100) -> float:
    start = time.monotonic()
    for i in range(count):
        report.capture_peer_up("192.0.2.1", f"192.0.2.{i % 250}", 65000 + i)
        if i % 10 == 0:
            report.capture_parse_error("bmp_parse_error", "192.0.2.1", "bad", b"\x02" * 300,
                                       _raise(FramingError(f"bad {i}", 0)))
    return time.monotonic() - start


def test_closed_port_does_not_delay(logs):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    assert report.init_sentry(settings(f"http://{DSN_KEY}@127.0.0.1:{port}/1")) is True
    assert _capture_many() < 2.0


def test_silent_server_does_not_delay(logs):
    silent = Silent()
    try:
        assert report.init_sentry(settings(f"http://{DSN_KEY}@127.0.0.1:{silent.port}/1"))
        elapsed = _capture_many()
        # Sending is in the background: the SDK did connect, and is waiting for an
        # answer (up to its 5 s timeout) while the captures returned.
        deadline = time.monotonic() + 5
        while not silent.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert silent.accepted
        assert elapsed < 2.0
        start = time.monotonic()
        report.shutdown_sentry(timeout=0.5)
        assert time.monotonic() - start < 2.0
    finally:
        silent.close()


GEVENT_SCRIPT = r"""
from gevent import monkey
monkey.patch_all()
import dataclasses, json, sys, time
import gevent
from pybmpmon.config import Settings
from pybmpmon.logsetup import setup_logging
from pybmpmon import sentry

setup_logging("WARNING", "json")
port = int(sys.argv[1])
s = dataclasses.replace(Settings(), sentry_dsn=f"http://key123456@127.0.0.1:{port}/1")
assert sentry.init_sentry(s)
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)
g = gevent.spawn(ticker)
gevent.sleep(0.05)
start = time.monotonic()
for i in range(100):
    sentry.capture_peer_up("192.0.2.1", "192.0.2.100", 65001)
    sentry.capture_peer_down("192.0.2.1", 1)
    gevent.sleep(0)  # a router greenlet yields between messages
captured = time.monotonic() - start
gevent.sleep(1.0)  # the worker greenlet is now blocked on the silent server
window = [t for t in ticks if t >= start]
gaps = [b - a for a, b in zip(window, window[1:])]
g.kill()
print(json.dumps({"captured": captured, "max_gap": max(gaps), "ticks": len(window)}))
"""


def test_gevent_hub_keeps_running_while_sentry_hangs():
    silent = Silent()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", GEVENT_SCRIPT, str(silent.port)],
            env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.splitlines()[-1])
        assert silent.accepted  # the SDK really tried to send
        assert result["captured"] < 2.0
        assert result["max_gap"] < 0.5  # the ticking greenlet was never starved
        assert result["ticks"] > 50
    finally:
        silent.close()
