"""``pybmpmon serve`` as operators run it: a real process, real sockets, real PostgreSQL.

Each test starts the collector as a subprocess against a fresh database,
plays routers over TCP on 127.0.0.0/8 (each with its own source address),
reads the JSON log lines and the database, and stops the process; see
test_service_support.py for the harness.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections import Counter

from pybmpmon.errors import BgpError
from pybmpmon.session import DecodeFailure, RouterSession
from test_service_support import (
    CORPUS,
    GARBAGE,
    Sender,
    connect_from,
    corrupt_origin,
    decode_capture,
    expected_families,
    expected_history,
    join_all,
    manifest,
    manifest_peer,
    private_database,
    query,
    reference_current,
    replay_from,
    serve_factory,  # noqa: F401 - the fixture
    synthetic_table,
)


# --- 1. many routers at once, one of them not a router ------------------------------------

ROUTERS = {  # source address -> capture
    "127.0.0.11": "frr-prepost-1",  # held open until its route_stats has counted everything
    "127.0.0.12": "gobgp-all-1",
    "127.0.0.13": "frr-nosoftreconfig-small-1",
    "127.0.0.14": "gobgp-local-rib-small-1",
    "127.0.0.15": "gobgp-post-policy-small-1",
}
HELD = "127.0.0.11"
INTRUDER = "127.0.0.20"


def test_corpus_from_concurrent_routers_and_a_garbage_connection(db_dsn, serve_factory):  # noqa: F811
    """Five routers replay real captures at once while a sixth connection sends HTTP.

    The intruder's connection is closed by the station at once (its recv sees EOF)
    and leaves a bmp_parse_error log line with the bytes in hex and a decode_failures
    row; every router's history, current routes, peers, peer events, statistics and
    router row are exactly what its capture holds; the log has the documented events
    with their fields, and the process stops cleanly on SIGTERM.
    """
    serve = serve_factory(db_dsn)
    held = connect_from(HELD, serve.port)
    held.sendall((CORPUS / f"{ROUTERS[HELD]}.bmp").read_bytes())
    senders = [replay_from(source, name, serve.target)
               for source, name in ROUTERS.items() if source != HELD]

    intruder = connect_from(INTRUDER, serve.port, timeout=5)
    intruder.sendall(GARBAGE)
    started = time.monotonic()
    try:
        closed = intruder.recv(4096)
    finally:
        intruder.close()
    assert closed == b"" and time.monotonic() - started < 3

    join_all(senders)
    # The held router stays connected until a route_stats line counts its whole capture.
    summary = manifest(ROUTERS[HELD])
    stats = serve.wait_for("route_stats", router=HELD,
                           routes=sum(expected_families(summary).values()), timeout=30)
    held.close()
    for source in ROUTERS:
        serve.wait_for("router_disconnected", router=source)
    assert serve.terminate() == 0

    # --- the log --------------------------------------------------------------------
    assert not serve.bad_lines, serve.bad_lines[:5]
    assert not serve.stderr, serve.stderr[:20]
    for record in serve.records:
        assert {"timestamp", "level", "logger", "event"} <= set(record), record
        assert record["timestamp"].endswith("Z")
    for event in ("pybmpmon_starting", "pybmpmon_listening", "shutdown_initiated",
                  "pybmpmon_stopped"):
        assert len(serve.find(event)) == 1, event
    assert serve.find("shutdown_initiated")[0]["signal"] == "SIGTERM"
    assert serve.find("pybmpmon_stopped")[0]["flushed"] is True
    assert "DATABASE_URL" not in json.dumps(serve.find("pybmpmon_starting"))

    assert stats["level"] == "INFO" and stats["sys_name"] == "frr-lab-mon"
    assert stats["messages"] == summary["messages_total"]
    assert stats["errors"] == 0
    assert stats["families"] == expected_families(summary)
    assert isinstance(stats["routes_per_second"], float)
    assert isinstance(stats["messages_per_second"], float)

    for source, name in ROUTERS.items():
        summary = manifest(name)
        assert len(serve.find("router_connected", router=source)) == 1
        (init,) = serve.find("router_initiation", router=source)
        tlvs = {t["name"]: t["value"] for t in summary["initiation"][0]}
        assert (init["sys_name"], init["sys_descr"]) == (tlvs["sysName"], tlvs["sysDescr"])
        ups = serve.find("bmp_peer_up", router=source)
        assert sorted((r["peer"], r["asn"], r["local_ip"], r["local_port"], r["remote_port"])
                      for r in ups) == sorted(
            (*manifest_peer(p["peer"]), p["local_address"], p["local_port"], p["remote_port"])
            for p in summary["peer_up"])
        assert all(r["level"] == "INFO" for r in ups)
        downs = serve.find("bmp_peer_down", router=source)
        assert sorted((r["peer"], r["asn"], r["reason_code"]) for r in downs) == sorted(
            (*manifest_peer(p["peer"]), p["reason"]) for p in summary["peer_down"])
        assert all(r["level"] == "WARNING" for r in downs)
        (gone,) = serve.find("router_disconnected", router=source)
        assert gone["messages"] == summary["messages_total"]
        assert gone["routes"] == sum(expected_families(summary).values())
        assert gone["errors"] == 0
        assert not serve.find("bmp_parse_error", router=source)
        assert not serve.find("bgp_parse_error", router=source)

    (error,) = serve.find("bmp_parse_error", router=INTRUDER)
    assert error["level"] == "ERROR"
    assert error["hex"] == GARBAGE.hex()
    assert error["action"] == "connection_closed"
    assert error["message"].startswith("bmp_parse_error: ")
    assert serve.find("router_disconnected", router=INTRUDER)[0]["errors"] == 1

    # --- the database ---------------------------------------------------------------
    routers = {ip: rest for ip, *rest in query(
        db_dsn, "SELECT host(router_ip), sys_name, sys_descr, connected FROM routers")}
    assert set(routers) == set(ROUTERS) | {INTRUDER}
    assert routers[INTRUDER] == [None, None, False]
    for source, name in ROUTERS.items():
        summary = manifest(name)
        tlvs = {t["name"]: t["value"] for t in summary["initiation"][0]}
        assert routers[source] == [tlvs["sysName"], tlvs["sysDescr"], False], source

        history = Counter({(rib, fam, w): n for rib, fam, w, n in query(
            db_dsn, "SELECT rib, afi_safi, is_withdrawn, count(*) FROM route_updates "
                    "WHERE router_ip = %s AND cause IS NULL GROUP BY 1, 2, 3", source)})
        assert history == expected_history(summary), source

        current = Counter({(rib, fam): n for rib, fam, n in query(
            db_dsn, "SELECT rib, afi_safi, count(*) FROM current_routes "
                    "WHERE router_ip = %s GROUP BY 1, 2", source)})
        events = decode_capture((CORPUS / f"{name}.bmp").read_bytes())
        assert current == reference_current(events), source

        peers = query(db_dsn, "SELECT host(peer_ip), peer_asn FROM bgp_peers "
                              "WHERE router_ip = %s", source)
        assert sorted(peers) == sorted((p["address"], p["as"]) for p in summary["peers"])
        kinds = dict(query(db_dsn, "SELECT event, count(*) FROM peer_events "
                                   "WHERE router_ip = %s GROUP BY 1", source))
        assert kinds.get("peer_up", 0) == summary["messages_by_type"].get("peer_up", 0)
        assert kinds.get("peer_down", 0) == summary["messages_by_type"].get("peer_down", 0)
        (stats_rows,) = query(db_dsn, "SELECT count(*) FROM stats_reports "
                                      "WHERE router_ip = %s", source)[0]
        assert stats_rows == sum(summary["stat_counter_types_seen"].values())

    failures = query(db_dsn, "SELECT host(router_ip), peer_ip, error_type, raw "
                             "FROM decode_failures")
    assert [(ip, peer, kind, bytes(raw)) for ip, peer, kind, raw in failures] == [
        (INTRUDER, None, "FramingError", GARBAGE)]


# --- 2. a content error inside a valid stream --------------------------------------------


def test_content_error_is_logged_kept_and_skipped(db_dsn, serve_factory):  # noqa: F811
    """One UPDATE with an impossible ORIGIN value inside a valid stream: logged as
    bgp_parse_error with its hex, kept in decode_failures, and every other route of
    the stream stored (history and current state exact, minus that message's routes)."""
    name = "gobgp-pre-policy-small-1"
    original = (CORPUS / f"{name}.bmp").read_bytes()
    data, offset, length = corrupt_origin(original, index=3)
    raw = data[offset:offset + length]
    # The routes the broken message carried (decoded from the intact stream).
    intact = RouterSession()
    before = intact.feed(original[:offset])
    (carried,) = intact.feed(original[offset:offset + length])
    lost = Counter()
    for route_set in carried.update.announced:
        lost[(carried.peer.rib, route_set.afi_safi, False)] += len(route_set.nlri)
    for route_set in carried.update.withdrawn:
        lost[(carried.peer.rib, route_set.afi_safi, True)] += len(route_set.nlri)
    assert sum(lost.values()) > 0 and before

    events = decode_capture(data)
    failures = [e for e in events if isinstance(e, DecodeFailure)]
    assert len(failures) == 1 and isinstance(failures[0].error, BgpError)

    serve = serve_factory(db_dsn)
    router = "127.0.0.21"
    sock = connect_from(router, serve.port)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(1) == b""  # the station read to the end and closed: not a framing error
    sock.close()
    gone = serve.wait_for("router_disconnected", router=router)
    assert serve.terminate() == 0

    summary = manifest(name)
    (error,) = serve.find("bgp_parse_error", router=router)
    assert error["level"] == "ERROR"
    assert error["hex"] == raw[:256].hex()
    assert error["length"] == length
    assert error["stream_offset"] == offset
    assert error["peer"] == str(carried.peer.address)
    assert "ORIGIN" in error["error"]
    assert error["message"] == f"bgp_parse_error: {error['error']}"
    assert not serve.find("bmp_parse_error")
    assert (gone["errors"], gone["messages"]) == (1, summary["messages_total"] - 1)
    assert gone["routes"] == sum(expected_families(summary).values()) - sum(lost.values())

    rows = query(db_dsn, "SELECT host(router_ip), host(peer_ip), error_type, error, raw "
                         "FROM decode_failures")
    assert [(r[0], r[1], r[2], bytes(r[4])) for r in rows] == [
        (router, str(carried.peer.address), "BgpError", raw)]
    assert "ORIGIN" in rows[0][3]

    history = Counter({(rib, fam, w): n for rib, fam, w, n in query(
        db_dsn, "SELECT rib, afi_safi, is_withdrawn, count(*) FROM route_updates "
                "WHERE cause IS NULL GROUP BY 1, 2, 3")})
    assert history == expected_history(summary) - lost
    current = Counter({(rib, fam): n for rib, fam, n in query(
        db_dsn, "SELECT rib, afi_safi, count(*) FROM current_routes GROUP BY 1, 2")})
    assert current == reference_current(events)
    assert query(db_dsn, "SELECT count(*) FROM bgp_peers")[0][0] == len(summary["peers"])


# --- 4. SIGTERM in the middle of a full-table load ---------------------------------------


def test_sigterm_during_a_large_load_flushes_what_was_read(db_dsn, serve_factory):  # noqa: F811
    """SIGTERM while a router streams a 240k-route table.

    Exactness: the collector counts a route in ``routes`` of router_disconnected
    when the events of a socket read are handed to the writer (a handler that
    was killed while its hand-over blocked would still have counted them, so a
    loss shows).  The synthetic table only announces, each route once, so every
    counted route must be exactly one route_updates row (cause IS NULL) and one
    route_state row: equality, not a bound.  The test also checks that SIGTERM
    really came mid-stream (some routes read, not all) and that the process exits
    0 within SHUTDOWN_TIMEOUT with pybmpmon_stopped flushed=true.
    """
    path, counts = synthetic_table(200_000, 40_000)
    shutdown_timeout = 15
    serve = serve_factory(db_dsn, SHUTDOWN_TIMEOUT=str(shutdown_timeout), BATCH_SIZE="5000",
                          STATS_INTERVAL="0.2")
    router = "127.0.0.31"
    sender = Sender(router, serve.port, path)
    serve.wait_for("route_stats", router=router, where=lambda r: r["routes"] >= 40_000,
                   timeout=60)
    started = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    try:
        status = serve.proc.wait(shutdown_timeout + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {shutdown_timeout + 5} s after SIGTERM")
    took = time.monotonic() - started
    serve.join()
    sender.done.wait(10)

    assert status == 0, serve.dump()
    assert took <= shutdown_timeout, took
    (stopped,) = serve.find("pybmpmon_stopped")
    assert stopped["flushed"] is True
    assert not serve.find("router_handlers_killed")
    (gone,) = serve.find("router_disconnected", router=router)
    read = gone["routes"]
    assert 0 < read < counts["routes"], "SIGTERM did not come in the middle of the load"
    assert gone["errors"] == 0

    (history,) = query(db_dsn, "SELECT count(*) FROM route_updates "
                               "WHERE router_ip = %s AND cause IS NULL", router)[0]
    (state,) = query(db_dsn, "SELECT count(*) FROM route_state WHERE router_ip = %s", router)[0]
    assert (history, state) == (read, read)
    assert query(db_dsn, "SELECT connected FROM routers WHERE router_ip = %s", router) == [
        (False,)]


def test_sigterm_during_a_database_outage_stops_in_time(make_local_pg, serve_factory):  # noqa: F811
    """SIGTERM while the database is down and routes wait for it: the process
    still exits within SHUTDOWN_TIMEOUT (supervisord would SIGKILL it otherwise),
    with status 1 and pybmpmon_stopped flushed=false, so the loss is not silent."""
    server, dsn = private_database(make_local_pg, "outage_stop")
    shutdown_timeout = 6
    serve = serve_factory(dsn, SHUTDOWN_TIMEOUT=str(shutdown_timeout), BATCH_TIMEOUT="0.2")
    server.stop(mode="fast")
    # Routes arrive with nowhere to go; the writer finds the database gone.
    number = 61
    deadline = time.monotonic() + 30
    while not serve.find("database_unavailable"):
        assert time.monotonic() < deadline, "no database_unavailable\n" + serve.dump()
        source = f"127.0.0.{number}"
        join_all([replay_from(source, "gobgp-pre-policy-small-1", serve.target)])
        serve.wait_for("router_disconnected", router=source)
        number += 1
        time.sleep(0.3)

    started = time.monotonic()
    status = serve.terminate(timeout=shutdown_timeout + 10)
    took = time.monotonic() - started
    assert took <= shutdown_timeout, (took, serve.dump())
    assert status == 1, serve.dump()
    (stopped,) = serve.find("pybmpmon_stopped")
    assert stopped["flushed"] is False
