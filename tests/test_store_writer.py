"""The gevent writer: batching, cooperation with the hub, faults, outages."""

from __future__ import annotations

import logging
import time

import gevent
import psycopg2
import pytest

from pybmpmon.store.pool import ConnectionPool
from pybmpmon.store.writer import Writer
from writing import ROUTER, prefixes, scalar


def test_submit_flush_stop(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=10)
    writer.router_connected(ROUTER)
    peer = ev.peer()
    for i in range(7):
        writer.submit(ROUTER, [ev.peer_up(peer)] if i == 0 else [],)
        writer.submit(ROUTER, [ev.announce(peer, prefixes(5, i * 5))])
    assert writer.flush(timeout=30)
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes") == 35
    assert scalar(db_dsn, "SELECT connected FROM routers") is True
    assert writer.stats["routes"] == 35 and writer.stats["batches"] >= 3
    writer.router_disconnected(ROUTER)
    assert writer.stop(timeout=30)
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes WHERE stale") == 35
    assert scalar(db_dsn, "SELECT connected FROM routers") is False


def test_batch_timeout_commits_without_flush(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100000, batch_timeout=0.2)
    writer.submit(ROUTER, [ev.announce(ev.peer(), ["10.0.0.0/8"])])
    deadline = time.monotonic() + 10
    while scalar(db_dsn, "SELECT count(*) FROM route_state") == 0:
        assert time.monotonic() < deadline
        gevent.sleep(0.05)


def test_routers_left_connected_are_reset_at_start(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    first = make_writer(db_dsn)
    first.router_connected(ROUTER)
    first.submit(ROUTER, [ev.announce(ev.peer(), ["10.0.0.0/8"])])
    assert first.flush(timeout=30)
    # The process dies here without disconnecting the router; a new one starts.
    second = make_writer(db_dsn)
    assert second.flush(timeout=30)
    assert scalar(db_dsn, "SELECT connected FROM routers") is False
    assert scalar(db_dsn, "SELECT stale FROM route_state") is True


def test_hub_keeps_ticking_during_a_large_copy(db_dsn, make_writer, bmp_events):
    """The COPY and merges run on a native thread: greenlets keep being served."""
    ev = bmp_events
    peer = ev.peer()
    events = [ev.announce(peer, prefixes(500, i * 500)) for i in range(300)]  # 150k routes
    writer = make_writer(db_dsn, batch_size=200000, batch_timeout=60)
    for chunk in range(0, len(events), 10):
        writer.submit(ROUTER, events[chunk:chunk + 10])
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    # Let the batcher turn the submissions into lines first: what is measured
    # below is the database's part.
    gevent.sleep(0)
    while writer.pending:
        gevent.sleep(0.05)
    ticking = gevent.spawn(ticker)
    started = time.monotonic()
    assert writer.flush(timeout=300)
    took = time.monotonic() - started
    ticking.kill()
    assert scalar(db_dsn, "SELECT count(*) FROM route_state") == 150000
    assert took > 1.0, "the COPY was too quick to show anything"
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > took / 0.01 * 0.3, (len(ticks), took)
    assert max(gaps) < 0.5, max(gaps)


def test_rejected_content_is_isolated(db_dsn, make_writer, bmp_events, caplog):
    ev = bmp_events
    peer = ev.peer()
    bad = ev.announce(peer, [], nlri=(ev.bgp.Nlri("999.1.2.0/24"),))
    writer = make_writer(db_dsn, batch_size=100000)
    with caplog.at_level(logging.ERROR, logger="pybmpmon.store.writer"):
        writer.submit(ROUTER, [ev.announce(peer, ["10.0.0.0/8"])])
        writer.submit(ROUTER, [ev.announce(peer, ["11.0.0.0/8"]), bad,
                               ev.announce(peer, ["12.0.0.0/8"])])
        writer.submit(ROUTER, [ev.withdraw(peer, ["10.0.0.0/8"])])
        assert writer.flush(timeout=60)
    got = {r for (r,) in _rows(db_dsn, "SELECT nlri FROM current_routes")}
    assert got == {"11.0.0.0/8", "12.0.0.0/8"}
    assert writer.stats["dropped_routes"] == 1
    errors = [r for r in caplog.records if r.getMessage() == "route_processing_error"]
    assert errors and errors[-1].route_count == 1
    # The connection that saw the error was cleaned: the writer goes on.
    writer.submit(ROUTER, [ev.announce(peer, ["13.0.0.0/8"])])
    assert writer.flush(timeout=30)
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes") == 3
    # The batch was split and part of it dropped: its attribute set is not
    # taken as stored on that account, and every route shows its attributes.
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes WHERE next_hop IS NULL") == 0


def _rows(dsn, query):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_pool_never_reuses_a_dirty_connection(db_dsn):
    pool = ConnectionPool(db_dsn, size=2)
    conn = pool.get()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error):
            cur.execute("SELECT no_such_column FROM routers")
    pool.put(conn)  # in a failed transaction: rolled back before it is kept
    again = pool.get()
    assert again is conn
    assert again.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with again.cursor() as cur:
        cur.execute("SELECT 1")
    again.close()  # e.g. the server went away
    pool.put(again)
    fresh = pool.get()
    assert fresh is not again and not fresh.closed
    with pytest.raises(ZeroDivisionError):
        with pool.connection() as c:
            c.cursor().execute("SELECT 1")
            raise ZeroDivisionError  # not a database error: the connection is dropped
    assert pool.discarded >= 2
    pool.close()


def test_outage_loses_nothing(make_local_pg, make_writer, bmp_events, caplog):
    """PostgreSQL stopped for seconds while routes flow: all accepted routes arrive."""
    from pybmpmon.store.migrate import migrate

    ev = bmp_events
    server = make_local_pg()
    dsn = server.dsn()
    migrate(dsn)
    writer = make_writer(dsn, batch_size=200, batch_timeout=0.1, max_pending=4,
                         retry_initial=0.1, retry_max=0.5)
    peer = ev.peer()
    accepted = []
    blocked = []

    def produce():
        for i in range(120):
            before = time.monotonic()
            writer.submit(ROUTER, [ev.announce(peer, prefixes(50, i * 50))])
            blocked.append(time.monotonic() - before)
            accepted.append(i)
            gevent.sleep(0.02)

    threadpool = gevent.get_hub().threadpool
    with caplog.at_level(logging.INFO, logger="pybmpmon.store.writer"):
        producer = gevent.spawn(produce)
        while len(accepted) < 30:
            gevent.sleep(0.02)
        threadpool.apply(server.stop, kwds={"mode": "fast"})
        stopped_at = len(accepted)
        gevent.sleep(4)
        during = len(accepted) - stopped_at
        threadpool.apply(server.start)
        producer.join(timeout=120)
        assert producer.successful()
        assert writer.flush(timeout=120)
    assert len(accepted) == 120
    # Backpressure: with the database gone the queue filled and submit blocked.
    assert during < 20, during
    assert max(blocked) > 2.0
    assert scalar(dsn, "SELECT count(*) FROM route_updates") == 120 * 50
    assert scalar(dsn, "SELECT count(*) FROM current_routes") == 120 * 50
    assert scalar(dsn, "SELECT max(learn_count) FROM route_state") == 1  # nothing twice
    # Every route still finds its attribute set (sent until a batch holding it committed).
    assert scalar(dsn, "SELECT count(*) FROM current_routes WHERE next_hop IS NULL") == 0
    assert scalar(dsn, "SELECT count(*) FROM route_updates WHERE next_hop IS NULL") == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "database_unavailable" in messages and "database_recovered" in messages
    error = next(r for r in caplog.records if r.getMessage() == "route_processing_error")
    assert error.levelno == logging.ERROR and error.route_count > 0
    recovered = next(r for r in caplog.records if r.getMessage() == "database_recovered")
    assert recovered.downtime_s > 2


def test_a_submission_that_cannot_be_built_is_dropped_alone(db_dsn, make_writer, bmp_events,
                                                            caplog):
    ev = bmp_events
    peer = ev.peer()
    broken = ev.bmp.RouteMonitoring(peer, ev.bgp.Update(None, (ev.bgp.RouteSet(
        1, 1, "ipv4_unicast", None, (ev.bgp.Nlri("10.9.0.0/16"),)),), ()))
    writer = make_writer(db_dsn, batch_size=100000)
    with caplog.at_level(logging.ERROR, logger="pybmpmon.store.writer"):
        writer.submit(ROUTER, [ev.announce(peer, ["10.0.0.0/8"])])
        writer.submit(ROUTER, [ev.announce(peer, ["11.0.0.0/8"]), broken])
        writer.submit(ROUTER, [ev.announce(peer, ["12.0.0.0/8"])])
        assert writer.flush(timeout=30)
    got = {r for (r,) in _rows(db_dsn, "SELECT nlri FROM current_routes")}
    assert got == {"10.0.0.0/8", "12.0.0.0/8"}
    errors = [r for r in caplog.records if r.getMessage() == "route_processing_error"]
    assert len(errors) == 1 and errors[0].route_count == 2


def test_maintenance_runs_while_idle(db_dsn, make_writer):
    writer = Writer(db_dsn, maintenance_interval=0.2)
    calls = []
    maintain = writer.store.maintain
    writer.store.maintain = lambda: calls.append(time.monotonic()) or maintain()
    writer.start()
    try:
        gevent.sleep(1.0)  # nothing submitted
        assert len(calls) >= 3
    finally:
        assert writer.stop(timeout=30)


# -- the lane: routers with nothing in flight do not wait behind others ------

OTHER = "10.0.0.2"


def wait_until(check, timeout):
    """Poll ``check()`` (yielding to the hub in between) until true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.02)
    return True


def writer_waits_on_a_lock(dsn):
    """Whether one of the writer's transactions is waiting for a lock."""
    return scalar(dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = 'pybmpmon' AND wait_event_type = 'Lock'") > 0


class TableLock:
    """``table`` locked from another connection until :meth:`release`: what touches it waits."""

    def __init__(self, dsn, table):
        self.conn = psycopg2.connect(dsn)
        with self.conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def release(self):
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


def stats_report(ev, peer):
    return ev.bmp.StatisticsReport(peer, (ev.bmp.Stat(7, 12),))


def test_lane_commits_a_peer_up_while_the_main_batch_is_held(db_dsn, make_writer, bmp_events):
    """A's routes wait on a lock inside their transaction (route_current, after A's
    routers and bgp_peers rows); B's Peer Up, for the same peer address, is
    committed meanwhile: the lane, and no lock shared with A's transaction.
    A's statistics, sent while A's batch is held, wait for the next main batch
    (in the lane they would wait for A's routers row, and hold up B)."""
    ev = bmp_events
    a_peer, b_peer = ev.peer("192.0.2.1"), ev.peer("192.0.2.1", asn=65002)
    writer = make_writer(db_dsn, batch_size=100000, batch_timeout=0.05)
    lock = TableLock(db_dsn, "route_current")
    try:
        writer.router_connected(ROUTER)
        writer.submit(ROUTER, [ev.peer_up(a_peer)])
        writer.submit(ROUTER, [ev.announce(a_peer, prefixes(2000))])
        assert wait_until(lambda: writer_waits_on_a_lock(db_dsn), 30), "A's batch was not held"
        writer.submit(ROUTER, [stats_report(ev, a_peer)])
        writer.router_connected(OTHER)
        writer.submit(OTHER, [ev.peer_up(b_peer), stats_report(ev, b_peer)])
        started = time.monotonic()
        assert wait_until(lambda: scalar(db_dsn, "SELECT count(*) FROM bgp_peers "
                                                 "WHERE router_ip = %s", OTHER) == 1, 10)
        print(f"lane_peer_up_s={time.monotonic() - started:.3f}")
        assert writer_waits_on_a_lock(db_dsn), "A's batch was over: the test proved nothing"
        assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 0
        assert scalar(db_dsn, "SELECT connected FROM routers WHERE router_ip = %s", OTHER)
        assert scalar(db_dsn, "SELECT count(*) FROM stats_reports WHERE router_ip = %s",
                      OTHER) == 1
    finally:
        lock.release()
    assert writer.flush(timeout=60)
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes WHERE router_ip = %s",
                  ROUTER) == 2000
    assert scalar(db_dsn, "SELECT count(*) FROM stats_reports WHERE router_ip = %s",
                  ROUTER) == 1
    assert writer.stats["routes"] == 2000
    assert writer.stats["lane_batches"] == 2  # A's connect and Peer Up, then B's
    assert writer.stats["batches"] == 4


def test_routes_and_peer_down_wait_for_the_lane(db_dsn, make_writer, bmp_events):
    """The lane is held by another router's batch, so this router's Peer Up waits
    for the next lane batch; its routes and Peer Down, submitted after it, are
    not applied before it (they would leave the peer 'up')."""
    ev = bmp_events
    peer = ev.peer()
    writer = make_writer(db_dsn, batch_size=100000, batch_timeout=0.05)
    lock = TableLock(db_dsn, "stats_reports")
    try:
        writer.router_connected(OTHER)
        writer.submit(OTHER, [stats_report(ev, ev.peer("192.0.2.9"))])
        assert wait_until(lambda: writer_waits_on_a_lock(db_dsn), 30), "the lane was not held"
        writer.router_connected(ROUTER)
        writer.submit(ROUTER, [ev.peer_up(peer)])
        writer.submit(ROUTER, [ev.announce(peer, prefixes(50))])
        writer.submit(ROUTER, [ev.peer_down(peer)])
        assert not writer.flush(timeout=1.0)
        assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 0
        assert scalar(db_dsn, "SELECT count(*) FROM peer_events") == 0
    finally:
        lock.release()
    assert writer.flush(timeout=60)
    assert scalar(db_dsn, "SELECT state FROM bgp_peers WHERE router_ip = %s", ROUTER) == "down"
    assert scalar(db_dsn, "SELECT last_up < last_down FROM bgp_peers WHERE router_ip = %s",
                  ROUTER)
    events = _rows(db_dsn, "SELECT event, details->>'routes_withdrawn' FROM peer_events "
                           "ORDER BY time")
    assert events == [("peer_up", None), ("peer_down", "50")]
    assert _rows(db_dsn, "SELECT is_withdrawn, cause, count(*) FROM route_state "
                         "GROUP BY 1, 2") == [(True, "peer_down", 50)]
    assert scalar(db_dsn, "SELECT count(*) FROM stats_reports") == 1
    assert writer.stats["lane_batches"] == 2


def test_flush_and_stop_wait_for_the_lane(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    writer = make_writer(db_dsn)
    lock = TableLock(db_dsn, "stats_reports")
    try:
        writer.router_connected(ROUTER)
        writer.submit(ROUTER, [ev.peer_up(peer), stats_report(ev, peer)])
        assert wait_until(lambda: writer_waits_on_a_lock(db_dsn), 30), "the lane was not held"
        assert not writer.flush(timeout=0.5)
    finally:
        lock.release()
    assert writer.flush(timeout=30)
    # Committed when flush returned: no polling.
    assert scalar(db_dsn, "SELECT count(*) FROM bgp_peers WHERE state = 'up'") == 1
    assert scalar(db_dsn, "SELECT count(*) FROM stats_reports") == 1
    assert writer.stats["lane_batches"] == 1 and writer.stats["batches"] == 1
    writer.router_connected(OTHER)
    writer.submit(OTHER, [ev.peer_up(peer)])
    assert writer.stop(timeout=30)
    assert scalar(db_dsn, "SELECT count(*) FROM bgp_peers WHERE router_ip = %s", OTHER) == 1
    assert writer.stats["lane_batches"] == 2


def test_lane_bound_submissions_do_not_queue_behind_routes(db_dsn, bmp_events):
    """The queue is full of A's submissions: B's connect and Peer Up are accepted
    still, and are applied; A's own Peer Up, after its queued routes and Peer
    Down, keeps its place (the peer ends 'up')."""
    ev = bmp_events
    peer = ev.peer()
    writer = Writer(db_dsn, max_pending=3, batch_timeout=0.05)  # not started: nothing taken
    try:
        writer.submit(ROUTER, [ev.announce(peer, prefixes(10))])
        writer.submit(ROUTER, [ev.peer_down(peer)])
        writer.submit(ROUTER, [ev.peer_up(peer)])
        with gevent.Timeout(5, AssertionError("B waited for A's place in the queue")):
            writer.router_connected(OTHER)
            writer.submit(OTHER, [ev.peer_up(peer)])
        writer.start()
        assert writer.flush(timeout=30)
    finally:
        assert writer.stop(timeout=30)
    assert _rows(db_dsn, "SELECT host(router_ip), state FROM bgp_peers ORDER BY 1") == [
        (ROUTER, "up"), (OTHER, "up")]
    assert scalar(db_dsn, "SELECT count(*) FROM route_state WHERE is_withdrawn") == 10
    assert writer.stats["lane_batches"] == 1


def test_one_connection_means_no_lane(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    writer = make_writer(db_dsn, pool_size=1)
    writer.router_connected(ROUTER)
    writer.submit(ROUTER, [ev.peer_up(peer)])
    writer.submit(ROUTER, [ev.announce(peer, prefixes(5))])
    assert writer.flush(timeout=30)
    assert scalar(db_dsn, "SELECT count(*) FROM current_routes") == 5
    assert writer.stats["lane_batches"] == 0 and writer.stats["batches"] == 1


def test_outage_retries_the_lane(make_local_pg, make_writer, bmp_events, caplog):
    """PostgreSQL stops; a router connects (lane) while another sends routes (main):
    both batches are retried until the server is back, one outage is logged."""
    from pybmpmon.store.migrate import migrate

    ev = bmp_events
    server = make_local_pg()
    dsn = server.dsn()
    migrate(dsn)
    writer = make_writer(dsn, batch_timeout=0.1, retry_initial=0.1, retry_max=0.5)
    peer = ev.peer()
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100))])
    assert writer.flush(timeout=30)
    threadpool = gevent.get_hub().threadpool

    def lane_retried():
        return any(r.getMessage() == "database_retry" and r.operation == "lane batch"
                   for r in caplog.records)

    with caplog.at_level(logging.DEBUG, logger="pybmpmon.store.writer"):
        threadpool.apply(server.stop, kwds={"mode": "fast"})
        writer.submit(ROUTER, [ev.announce(peer, prefixes(100, 100))])
        writer.router_connected(OTHER)
        writer.submit(OTHER, [ev.peer_up(peer)])
        assert wait_until(lane_retried, 30)
        threadpool.apply(server.start)
        assert writer.flush(timeout=120)
    assert scalar(dsn, "SELECT count(*) FROM current_routes") == 200
    assert scalar(dsn, "SELECT count(*) FROM bgp_peers WHERE router_ip = %s", OTHER) == 1
    assert writer.stats["outages"] == 1 and writer.stats["lane_batches"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("database_unavailable") == 1
    assert messages.count("database_recovered") == 1


def test_queue_slots_go_to_the_oldest_waiter():
    """A released slot is handed to the router waiting longest, not to the one
    that happens to be running (which would otherwise keep winning: starvation)."""
    from pybmpmon.store.intake import FairSlots

    slots = FairSlots(1)
    order = []
    slots.acquire()  # "router A" holds the only slot

    def waiter(name):
        slots.acquire()
        order.append(name)

    b = gevent.spawn(waiter, "B")
    c = gevent.spawn(waiter, "C")
    gevent.sleep(0)  # both are waiting now
    slots.release()
    # A asks again at once, before B has run: it must queue behind B and C.
    a = gevent.spawn(waiter, "A")
    gevent.sleep(0)
    assert order == ["B"]
    slots.release()
    gevent.sleep(0)
    slots.release()
    gevent.joinall([a, b, c], timeout=5)
    assert order == ["B", "C", "A"]


def test_a_waiter_killed_in_line_gives_up_its_place():
    from pybmpmon.store.intake import FairSlots

    slots = FairSlots(1)
    slots.acquire()
    got = []
    doomed = gevent.spawn(slots.acquire)
    patient = gevent.spawn(lambda: (slots.acquire(), got.append("patient")))
    gevent.sleep(0)
    doomed.kill()
    slots.release()
    patient.join(timeout=5)
    assert got == ["patient"]


def test_stop_keeps_to_its_timeout_while_a_batch_is_stuck(db_dsn, make_writer, bmp_events):
    """The database holds the batch (a lock) past the timeout: stop() still returns
    within it, False, instead of waiting on for the batch in flight."""
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=10, batch_timeout=0.05)
    lock = TableLock(db_dsn, "route_current")
    try:
        writer.submit(ROUTER, [ev.announce(ev.peer(), ["10.0.0.0/8"])])
        deadline = time.monotonic() + 10
        while not writer._main:  # the batch is in the database, waiting
            assert time.monotonic() < deadline
            gevent.sleep(0.05)
        started = time.monotonic()
        assert writer.stop(timeout=1.0) is False
        assert time.monotonic() - started < 1.5
    finally:
        lock.release()
