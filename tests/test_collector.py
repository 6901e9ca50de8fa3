"""The collector under load, as a real ``pybmpmon serve`` process: gevent cooperation.

The writer runs COPY on a native thread (psycopg2 refuses COPY on green
connections; SPEC §2).  If it ran on the gevent hub instead, or held the hub
in any other way, nothing else would be read, decoded or stored while a large
batch is in the database.  These tests prove the opposite from the outside.
The last one checks, in process, that routers are read in turn.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

import gevent
import pytest
from gevent import socket
from test_service_support import (
    CORPUS,
    Sender,
    Serve,
    connect_from,
    messages_of,
    poll,
    query,
    synthetic_table,
)

from pybmpmon.collector import Collector, RouterConnection
from pybmpmon.config import Settings
from pybmpmon.session import RouterSession
from pybmpmon.store.writer import Writer

LOADER = "127.0.0.41"
NEWCOMER = "127.0.0.42"


def peer_up_prefix(name: str) -> tuple[bytes, int]:
    """The messages of a capture up to and including its Peer Ups (type 3), and how
    many Peer Ups that is."""
    data = (CORPUS / f"{name}.bmp").read_bytes()
    end = ups = 0
    for pos, length, kind in messages_of(data):
        if kind == 3:
            ups += 1
            end = pos + length
        elif ups:
            break
    return data[:end], ups


def writer_copy(dsn: str):
    """(pid, xact_start) of a pybmpmon connection running COPY in this database, or None."""
    rows = query(dsn, "SELECT pid, xact_start FROM pg_stat_activity "
                      "WHERE datname = current_database() AND application_name = 'pybmpmon' "
                      "AND state = 'active' AND query ILIKE 'COPY%%' AND pid <> pg_backend_pid()")
    return rows[0] if rows else None


def still_running(dsn: str, pid: int, xact_start) -> bool:
    return bool(query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND xact_start = %s "
                           "AND state = 'active'", pid, xact_start))


@pytest.fixture(scope="module")
def copy_in_flight(pg_server, pg_template, tmp_path_factory):
    """One run of the scenario, measured; the tests below assert on the measurements.

    Router A loads a 240k-route table with BATCH_SIZE 240,000 and BATCH_TIMEOUT
    60 (the whole table in one batch: about five seconds of COPY and merge, so
    it is still running when B's two seconds are over) and STATS_INTERVAL 0.2.  As soon as one of
    the writer's COPYs is running, router B sends an Initiation and its Peer Ups;
    B's bmp_peer_up log lines and bgp_peers rows are waited for, at most one second;
    B stays connected two seconds, its route_stats lines timed.
    """
    name = f"pybmpmon_cooperation_{os.getpid()}"
    pg_server.admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    dsn = pg_server.dsn(name)
    path, counts = synthetic_table(200_000, 40_000)
    data, ups = peer_up_prefix("gobgp-both-small-1")
    serve = Serve(tmp_path_factory.mktemp("serve"), dsn, BATCH_SIZE="240000",
                  BATCH_TIMEOUT="60", STATS_INTERVAL="0.2")
    loader = Sender(LOADER, serve.port, path)
    found = {"ups": ups, "table": counts["routes"]}
    try:
        copy = poll(lambda: writer_copy(dsn), bool, timeout=60, interval=0.01)
        assert copy, "the writer never ran a COPY"
        found["copy_seen"] = time.time()
        newcomer = connect_from(NEWCOMER, serve.port)
        newcomer.sendall(data)
        sent = time.monotonic()
        try:
            serve.wait_for("bmp_peer_up", router=NEWCOMER, count=ups, timeout=1.0)
            found["logged"] = time.monotonic() - sent
        except AssertionError:
            found["logged"] = None
        found["rows"] = poll(
            lambda: query(dsn, "SELECT count(*) FROM bgp_peers WHERE router_ip = %s",
                          NEWCOMER)[0][0], lambda n: n == ups,
            timeout=max(0.0, 1.0 - (time.monotonic() - sent)), interval=0.01)
        found["stored"] = time.monotonic() - sent
        found["committed"] = query(dsn, "SELECT count(*) FROM route_updates "
                                        "WHERE router_ip = %s", LOADER)[0][0]
        found["copy_still_running"] = still_running(dsn, *copy)
        # B stays connected: its route_stats ticker (every 0.2 s) must keep ticking.
        time.sleep(max(0.0, 2.0 - (time.monotonic() - sent)))
        found["ticks"] = [stamp(r) for r in serve.find("route_stats", router=NEWCOMER)]
        found["batch_in_flight_after_ticks"] = still_running(dsn, *copy)
        newcomer.close()
        yield found
    finally:
        # Not a shutdown test: the rest of the load need not be flushed.
        serve.proc.kill()
        serve.close()
        loader.sock.close()
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stamp(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def test_hub_keeps_serving_while_a_large_copy_runs(copy_in_flight):
    """B's Peer Ups are read, decoded and logged within a second, and B's route_stats
    ticker (every 0.2 s) keeps ticking for two seconds, while A's large batch is in
    the database.  Both fail if COPY (or anything else) held the gevent hub."""
    found = copy_in_flight
    assert found["logged"] is not None and found["logged"] < 1.0, found
    assert found["committed"] < found["table"], "A's load was over: the test proved nothing"
    assert found["batch_in_flight_after_ticks"], "A's batch was over: the test proved nothing"
    ticks = found["ticks"]
    assert len(ticks) >= 5, found
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 1.0, gaps


def test_peer_up_is_stored_within_a_second_while_a_large_copy_runs(copy_in_flight):
    """B's bgp_peers rows are in the database within a second of its Peer Ups, while
    A's large batch is still being written (the writer's lane: another router's
    Peer Up does not wait behind it)."""
    found = copy_in_flight
    print(f"peer_up_stored_s={found['stored']:.3f}")
    assert found["committed"] < found["table"], "A's load was over: the test proved nothing"
    assert found["rows"] == found["ups"] and found["stored"] < 1.05, (
        f"{found['rows']} of {found['ups']} bgp_peers rows after {found['stored']:.3f} s; "
        f"A's routes committed by then: {found['committed']} of {found['table']}; the COPY "
        f"seen before B's send still running: {found['copy_still_running']}")


class _EndlessRouter:
    """A router connection that always has data waiting (recv never blocks)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def recv(self, size: int) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos = (self.pos + len(chunk)) % len(self.data)
        return chunk


def test_a_router_whose_data_arrived_meanwhile_is_read_next(db_dsn):
    """A router that is read without end must not keep a router whose data came
    in meanwhile waiting: after its next read, the loop polls the sockets.
    (gevent.sleep(0) would not: it may resume the busy reader before polling.)"""
    busy_stream = synthetic_table(16000, 4000)[0].read_bytes()
    late_data = (CORPUS / "gobgp-all-1.bmp").read_bytes()[:4096]
    writer = Writer(db_dsn, batch_size=100000, batch_timeout=0.2, max_pending=1000)
    writer.start()
    collector = Collector(Settings(bmp_listen_port=0), writer)
    reads = []
    dispatch = collector._dispatch

    def recording(conn, events):
        reads.append(conn.router_ip)
        if len(reads) == 1:
            # The late router's data arrives while the busy one is being read.
            late_peer.sendall(late_data)
        dispatch(conn, events)

    collector._dispatch = recording
    late, late_peer = socket.socketpair()
    busy = RouterConnection("10.0.0.1", 1, _EndlessRouter(busy_stream), RouterSession())
    quiet = RouterConnection("10.0.0.2", 2, late, RouterSession())
    readers = [gevent.spawn(collector._read, quiet, late)]
    gevent.sleep(0.05)  # the quiet router waits in recv()
    readers.append(gevent.spawn(collector._read, busy, busy.sock))
    deadline = time.monotonic() + 10
    while "10.0.0.2" not in reads and time.monotonic() < deadline:
        gevent.sleep(0.01)
    collector._stopping = True
    gevent.killall(readers, timeout=5)
    late.close()
    late_peer.close()
    writer.stop(timeout=30)
    assert "10.0.0.2" in reads[:3], reads[:12]
