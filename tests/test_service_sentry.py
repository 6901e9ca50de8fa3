"""Sentry end to end: ``pybmpmon serve`` with the real sentry-sdk reporting to a local
HTTP endpoint that records the envelopes (SPEC §7, ../shared/seed/sentry.md).

What a router's stream causes in the running service is checked field by field
against the seed: peer up (info), peer down (warning), BMP and BGP parse errors
(error, with the exception and data_hex), route processing errors during a
database outage (error, with route_count); and no secret (database password,
DSN key) in anything sent.  An unreachable or hung Sentry must not slow
collection down.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pybmpmon import __version__
from pybmpmon.bmp.model import RouteMonitoring
from pybmpmon.session import DecodeFailure, RouterSession
from test_service_support import (
    CORPUS,
    GARBAGE,
    connect_from,
    corrupt_origin,
    free_port,
    join_all,
    manifest,
    manifest_peer,
    messages_of,
    origin_value_offset,
    poll,
    private_database,
    query,
    replay_from,
    serve_factory,  # noqa: F401 - the fixture
    synthetic_table,
)

DSN_KEY = "e2ekey4711deadbeef"
DB_PASSWORD = "Db-Secret-0815-walrus"


# --- a Sentry that records, one that refuses, one that hangs ------------------------------


class Recorder(ThreadingHTTPServer):
    """Accepts Sentry envelopes on 127.0.0.1 and keeps their bodies."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def dsn(self) -> str:
        return f"http://{DSN_KEY}@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict]:
        out = []
        with self.lock:
            bodies = list(self.bodies)
        for body in bodies:
            lines = body.split(b"\n")
            index = 1
            while index + 1 < len(lines):
                header = json.loads(lines[index]) if lines[index].strip() else {}
                if header.get("type") == "event":
                    out.append(json.loads(lines[index + 1]))
                index += 2
        return out

    def close(self):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        elif self.headers.get("Content-Encoding") == "br":
            import brotli

            body = brotli.decompress(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        with self.server.lock:
            self.server.bodies.append(body)

    def log_message(self, *args):
        pass


class Hung:
    """Accepts connections and never answers: a Sentry that hangs."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.close()


def sentry_settings(dsn: str) -> dict:
    return {"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "e2e-test",
            "SENTRY_TRACES_SAMPLE_RATE": "1.0"}


def wait_events(recorder: Recorder, predicate, timeout: float = 15.0) -> list[dict]:
    return poll(recorder.events, predicate, timeout=timeout, interval=0.05)


# --- peer up, peer down, parse errors ------------------------------------------------------

ROUTER = "127.0.0.51"  # FRR: Peer Downs then Peer Ups
BROKEN = "127.0.0.52"  # a GoBGP capture with one bad UPDATE
INTRUDER = "127.0.0.53"  # not BMP at all


def test_events_from_a_running_service(db_dsn, serve_factory, recorder):  # noqa: F811
    name = "frr-nosoftreconfig-small-1"
    summary = manifest(name)
    original = (CORPUS / "gobgp-pre-policy-small-1.bmp").read_bytes()
    broken, offset, length = corrupt_origin(original, index=2)
    raw = broken[offset:offset + length]
    (failure,) = [e for e in RouterSession().feed(broken) if isinstance(e, DecodeFailure)]

    serve = serve_factory(db_dsn, password=DB_PASSWORD, **sentry_settings(recorder.dsn()))
    initialized = serve.wait_for("sentry_initialized")
    assert initialized["environment"] == "e2e-test"
    join_all([replay_from(ROUTER, name, serve.target)])
    sock = connect_from(BROKEN, serve.port)
    sock.sendall(broken)
    sock.close()
    intruder = connect_from(INTRUDER, serve.port)
    intruder.sendall(GARBAGE)
    assert intruder.recv(1) == b""
    intruder.close()
    for router in (ROUTER, BROKEN, INTRUDER):
        serve.wait_for("router_disconnected", router=router)
    ups, downs = len(summary["peer_up"]), len(summary["peer_down"])
    ups += len(manifest("gobgp-pre-policy-small-1")["peer_up"])
    wait_events(recorder, lambda events: len(events) >= ups + downs + 2)
    assert serve.terminate() == 0
    events = recorder.events()

    for event in events:
        assert event["environment"] == "e2e-test"
        assert event["release"] == f"pybmpmon@{__version__}"
    by_kind: dict = {}
    for event in events:
        tags = event.get("tags", {})
        by_kind.setdefault(tags.get("event_type") or tags.get("error_type"), []).append(event)
    # Every event is one of the seed's kinds: an ERROR log line already reported by an
    # explicit event must not come a second time through the logging integration.
    assert None not in by_kind, "events of no seed kind: " + json.dumps(
        [{k: e.get(k) for k in ("level", "message", "logentry", "logger", "tags")}
         for e in by_kind[None]])
    assert sorted(by_kind) == ["bgp_parse_error", "bmp_parse_error", "peer_down", "peer_up"]

    expected_ups = [(ROUTER, *manifest_peer(p["peer"])) for p in summary["peer_up"]]
    expected_ups += [(BROKEN, *manifest_peer(p["peer"]))
                     for p in manifest("gobgp-pre-policy-small-1")["peer_up"]]
    assert sorted(e["message"] for e in by_kind["peer_up"]) == sorted(
        f"BMP peer {router} established session with BGP peer {peer} (AS{asn})"
        for router, peer, asn in expected_ups)
    for event in by_kind["peer_up"]:
        router = event["message"].split()[2]
        peer = event["message"].split("BGP peer ")[1].split(" ")[0]
        asn = int(event["message"].rsplit("(AS", 1)[1].rstrip(")"))
        assert event["level"] == "info"
        assert event["tags"] == {"event_type": "peer_up", "peer_ip": router}
        assert event["contexts"]["bmp_peer"] == {"peer_ip": router, "bgp_peer": peer,
                                                 "bgp_peer_asn": asn}
        assert "exception" not in event

    assert len(by_kind["peer_down"]) == downs
    for event, expected in zip(by_kind["peer_down"], summary["peer_down"]):
        reason = expected["reason"]
        assert event["level"] == "warning"
        assert event["message"] == f"BMP peer {ROUTER} disconnected (reason code: {reason})"
        assert event["tags"] == {"event_type": "peer_down", "peer_ip": ROUTER}
        assert event["contexts"]["bmp_peer"] == {"peer_ip": ROUTER, "reason_code": reason}
        assert "exception" not in event

    (bgp,) = by_kind["bgp_parse_error"]
    assert bgp["level"] == "error"
    assert bgp["message"] == f"bgp_parse_error: {failure.error.message} from {BROKEN}"
    assert bgp["tags"] == {"error_type": "bgp_parse_error", "peer_ip": BROKEN}
    assert bgp["contexts"]["parse_error"] == {
        "peer_ip": BROKEN, "error_message": str(failure.error),
        "data_hex": raw[:256].hex()}
    assert bgp["exception"]["values"][-1]["type"] == "BgpError"

    (bmp,) = by_kind["bmp_parse_error"]
    assert bmp["level"] == "error"
    assert bmp["message"].startswith("bmp_parse_error: ") and bmp["message"].endswith(
        f" from {INTRUDER}")
    assert bmp["tags"] == {"error_type": "bmp_parse_error", "peer_ip": INTRUDER}
    context = bmp["contexts"]["parse_error"]
    assert set(context) == {"peer_ip", "error_message", "data_hex"}
    assert context["peer_ip"] == INTRUDER and context["data_hex"] == GARBAGE.hex()
    assert bmp["exception"]["values"][-1]["type"] == "FramingError"

    # Exactly one Sentry issue per parse error: the ERROR log lines are not sent again
    # by the logging integration.
    assert len([e for e in events if e["level"] == "error"]) == 2
    # Breadcrumbs: the INFO log lines before the error (LoggingIntegration, INFO+).
    crumbs = [c.get("message", "") for c in bgp.get("breadcrumbs", {}).get("values", [])]
    assert any("router_connected" in c for c in crumbs), crumbs

    for body in recorder.bodies:
        assert DB_PASSWORD.encode() not in body
        # The envelope header names the DSN (the SDK's own); no item may hold the key.
        assert DSN_KEY.encode() not in body.split(b"\n", 1)[1]


# --- route processing errors: the database goes away --------------------------------------


def test_database_outage_is_a_route_processing_error(make_local_pg, serve_factory, recorder):  # noqa: F811
    """The database stops while routes arrive: one route_processing_error event with the
    seed's message, tags, contexts and route_count; once the database is back, every
    route accepted meanwhile is stored."""
    server, dsn = private_database(make_local_pg, "outage")

    serve = serve_factory(dsn, password=DB_PASSWORD, **sentry_settings(recorder.dsn()))
    captures = {"127.0.0.54": "gobgp-pre-policy-small-1"}
    join_all([replay_from("127.0.0.54", captures["127.0.0.54"], serve.target)])
    total = sum(expected_count(captures["127.0.0.54"]))
    assert poll(lambda: query(dsn, "SELECT count(*) FROM route_updates")[0][0],
                lambda n: n == total, timeout=15) == total

    server.stop(mode="fast")  # "immediate" would lose commits: the test server runs with fsync off
    # Routers keep sending; the writer finds the database gone when it next commits.
    deadline = time.monotonic() + 30
    number = 55
    while not serve.find("database_unavailable"):
        assert time.monotonic() < deadline, "no database_unavailable\n" + serve.dump()
        source = f"127.0.0.{number}"
        captures[source] = "gobgp-post-policy-small-1"
        total += sum(expected_count(captures[source]))
        join_all([replay_from(source, captures[source], serve.target)])
        serve.wait_for("router_disconnected", router=source)
        number += 1
        time.sleep(0.5)
    server.start()
    server.wait_ready()
    serve.wait_for("database_recovered", timeout=30)
    stored = poll(lambda: query(dsn, "SELECT count(*) FROM route_updates")[0][0],
                  lambda n: n == total, timeout=15)
    assert stored == total, (query(dsn, "SELECT host(router_ip), count(*) FROM route_updates "
                                        "GROUP BY 1 ORDER BY 1"), captures, serve.dump(80))
    events = wait_events(recorder, lambda found: any(
        e.get("tags", {}).get("error_type") == "route_processing_error" for e in found),
        timeout=5)
    assert serve.terminate() == 0
    for body in recorder.bodies:
        assert DB_PASSWORD.encode() not in body

    (unavailable,) = serve.find("database_unavailable")
    found = [e for e in events
             if e.get("tags", {}).get("error_type") == "route_processing_error"]
    assert len(found) == 1, [e.get("message") or e.get("logentry") for e in events]
    (event,) = found
    assert event["level"] == "error"
    context = event["contexts"]["route_processing"]
    assert context["route_count"] > 0 and context["error_message"]
    if "peer_ip" in event["tags"]:
        router = event["tags"]["peer_ip"]
        assert router in captures
        assert event["message"] == (
            f"Route processing error from {router}: {context['error_message']}")
        assert context["peer_ip"] == router
    else:
        assert event["message"] == f"Route processing error: {context['error_message']}"


def expected_count(name: str) -> list:
    return [n for counts in manifest(name)["prefixes_by_view"].values() for n in counts.values()]


# --- Sentry down or hung: collection is not slowed ---------------------------------------


def error_stream(every: int = 100, max_routes: int = 30_000) -> tuple:
    """The start of bench/synth.py's 50k-route table (whole messages, about
    ``max_routes`` routes) with every ``every``-th IPv4 UPDATE broken: a parse
    error, hence a Sentry event, every few hundred routes.  Returns (stream,
    routes it still carries, parse errors)."""
    path, _ = synthetic_table(40_000, 10_000)
    data = bytearray(path.read_bytes())
    updates = 0
    for pos, length, _ in messages_of(bytes(data)):
        value = origin_value_offset(data, pos, length)
        if value is not None:
            updates += 1
            if updates % every == 0:
                data[value] = 7
    routes = errors = 0
    session = RouterSession()
    for pos, length, _ in messages_of(bytes(data)):
        for event in session.feed(bytes(data[pos:pos + length])):
            if type(event) is RouteMonitoring:
                routes += sum(len(rs.nlri) for rs in event.update.announced)
            elif type(event) is DecodeFailure:
                errors += 1
        if routes >= max_routes:
            return bytes(data[:pos + length]), routes, errors
    return bytes(data), routes, errors


def timed_load(serve, dsn: str, data: bytes, routes: int, source: str,
               limit: float = 120.0) -> float:
    """Seconds from the first byte to the last route committed (at most ``limit``: a
    slower load fails here, without waiting for its end)."""
    started = time.monotonic()
    sender = threading.Thread(target=_send, args=(source, serve.port, data), daemon=True)
    sender.start()
    count = poll(lambda: query(dsn, "SELECT count(*) FROM route_updates WHERE router_ip = %s",
                               source)[0][0], lambda n: n >= routes, timeout=limit,
                 interval=0.05)
    took = time.monotonic() - started
    assert count == routes, f"{count} of {routes} routes stored after {took:.1f} s"
    sender.join(10)
    return took


def _send(source: str, port: int, data: bytes) -> None:
    with connect_from(source, port, timeout=120) as sock:
        sock.sendall(data)


def test_unreachable_or_hung_sentry_does_not_slow_collection(db_dsn, serve_factory):  # noqa: F811
    data, routes, errors = error_stream()
    assert errors > 100
    hung = Hung()
    try:
        took = {}
        cases = [("none", {}),
                 ("refused", sentry_settings(f"http://{DSN_KEY}@127.0.0.1:{free_port()}/1")),
                 ("hung", sentry_settings(f"http://{DSN_KEY}@127.0.0.1:{hung.port}/1"))]
        for number, (label, settings) in enumerate(cases):
            serve = serve_factory(db_dsn, **settings)
            source = f"127.0.0.{60 + number}"
            # Loose bound: 1.5 times the time without Sentry, plus 2 s.
            limit = 120.0 if label == "none" else 1.5 * took["none"] + 2.0
            try:
                took[label] = timed_load(serve, db_dsn, data, routes, source, limit)
            except AssertionError as exc:
                raise AssertionError(f"Sentry {label}: {exc} (without Sentry: "
                                     f"{took['none']:.1f} s)") from None
            gone = serve.wait_for("router_disconnected", router=source)
            assert gone["errors"] == errors, label
            stopping = time.monotonic()
            assert serve.terminate() == 0
            assert time.monotonic() - stopping < float(serve.settings["SHUTDOWN_TIMEOUT"])
    finally:
        hung.close()
