"""The documented SQL: views and functions users query, partitions and retention."""

from __future__ import annotations

import datetime as dt
import time

import psycopg2
import pytest

from pybmpmon.store.database import Store, setup_connection
from pybmpmon.store.pool import ConnectionPool
from pybmpmon.store.rows import BatchBuilder

ROUTER = "10.0.0.1"


@pytest.fixture
def store(db_dsn):
    pool = ConnectionPool(db_dsn, setup=setup_connection)
    yield Store(pool, retention=dt.timedelta(days=7))
    pool.close()


def apply(store, events, at):
    builder = BatchBuilder()
    builder.add_events(ROUTER, events, at)
    store.apply(builder.take())


def rows(dsn, sql, *params):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def plan(dsn, sql):
    """The plan as on a big table (these tables are tiny: scans would win here)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN " + sql)
        return "\n".join(r[0] for r in cur.fetchall())


def test_prefix_and_covering_queries(db_dsn, store, bmp_events):
    ev = bmp_events
    now = time.time()
    p1, p2 = ev.peer(), ev.peer("192.0.2.2", asn=65002)
    apply(store, [ev.announce(p1, ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.3.0/24",
                                   "0.0.0.0/0"]),
                  ev.announce(p2, ["10.1.2.0/24"]),
                  ev.announce(p1, ["2001:db8::/32", "2001:db8:1::/48"], family="ipv6_unicast",
                              next_hop="2001:db8::1"),
                  ev.withdraw(p1, ["10.1.0.0/16"])], now)
    got = rows(db_dsn, "SELECT host(peer_ip) FROM current_routes WHERE prefix = '10.1.2.0/24' "
                       "ORDER BY 1")
    assert got == [("192.0.2.1",), ("192.0.2.2",)]
    got = rows(db_dsn, "SELECT prefix::text, host(peer_ip) FROM routes_covering('10.1.2.77')")
    assert got[:2] in ([("10.1.2.0/24", "192.0.2.1"), ("10.1.2.0/24", "192.0.2.2")],
                       [("10.1.2.0/24", "192.0.2.2"), ("10.1.2.0/24", "192.0.2.1")])
    assert [p for p, _ in got[2:]] == ["10.0.0.0/8", "0.0.0.0/0"]  # /16 withdrawn
    got = rows(db_dsn, "SELECT prefix::text FROM routes_covering('2001:db8:1::5')")
    assert got == [("2001:db8:1::/48",), ("2001:db8::/32",)]
    # The covering query uses the prefix index, not a scan of route_state.
    assert "route_current_prefix_idx" in plan(db_dsn, "SELECT * FROM routes_covering('10.1.2.77')")
    assert "route_current_prefix_idx" in plan(
        db_dsn, "SELECT * FROM current_routes WHERE prefix = '10.1.2.0/24'")


def test_prefix_history_and_unstable_prefixes(db_dsn, store, bmp_events):
    ev = bmp_events
    now = time.time()
    peer = ev.peer()
    apply(store, [ev.announce(peer, ["10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"])], now - 600)
    for i in range(5):  # 10/8 flaps five times, 11/8 changes once
        apply(store, [ev.withdraw(peer, ["10.0.0.0/8"])], now - 500 + i * 10)
        apply(store, [ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=i))], now - 495 + i * 10)
    apply(store, [ev.announce(peer, ["11.0.0.0/8"], ev.attrs(med=9))], now - 100)
    apply(store, [ev.announce(peer, ["12.0.0.0/8"])], now - 50)  # duplicate: no churn
    history = rows(db_dsn, "SELECT is_withdrawn, med FROM prefix_history('10.0.0.0/8')")
    assert len(history) == 11
    assert history[0] == (False, 4) and history[1] == (True, None)  # newest first
    assert history[-1] == (False, None)
    recent = rows(db_dsn, "SELECT count(*) FROM prefix_history('10.0.0.0/8', now() - "
                          "interval '200 seconds')")
    assert recent == [(0,)]
    unstable = rows(db_dsn, "SELECT prefix::text, updates, announces, withdraws FROM "
                            "unstable_prefixes")
    assert unstable == [("10.0.0.0/8", 11, 6, 5), ("11.0.0.0/8", 2, 2, 0)]
    window = rows(db_dsn, "SELECT prefix::text, updates FROM unstable_prefixes_since("
                          "now() - interval '200 seconds')")
    assert window == []  # 11/8 changed once in that window: one update is not churn
    assert "prefix_time_idx" in plan(db_dsn, "SELECT * FROM route_updates "
                                             "WHERE prefix = '10.0.0.0/8' ORDER BY time DESC")
    assert "route_current_churn_idx" in plan(db_dsn, "SELECT * FROM route_state WHERE "
                                                   "change_count > 0 AND last_change > now()")


def test_partitions_made_ahead_and_dropped_after_retention(db_dsn, store, bmp_events):
    ev = bmp_events
    now = time.time()
    today = int(now // 86400)
    store.maintain(now)
    names = {r[0] for r in rows(db_dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                        "ON c.oid = i.inhrelid WHERE i.inhparent = "
                                        "'route_history'::regclass")}

    def name(day):
        return "route_history_p" + dt.datetime.fromtimestamp(day * 86400,
                                                              dt.timezone.utc).strftime("%Y%m%d")

    assert {name(d) for d in range(today - 1, today + 3)} <= names
    # A route received ten days ago (replayed late) gets its partition on demand.
    old = now - 10 * 86400
    apply(store, [ev.announce(ev.peer(), ["10.0.0.0/8"])], old)
    apply(store, [ev.announce(ev.peer(), ["11.0.0.0/8"])], now)
    assert rows(db_dsn, "SELECT count(*) FROM route_updates")[0][0] == 2
    dropped = store.maintain(now)["dropped"]
    assert name(int(old // 86400)) in dropped
    assert rows(db_dsn, "SELECT count(*) FROM route_updates")[0][0] == 1
    assert rows(db_dsn, "SELECT count(*) FROM route_state")[0][0] == 2  # state is kept


def test_unused_attribute_sets_are_pruned_after_retention(db_dsn, store, bmp_events):
    """A set no current route uses, last sent before the retention cutoff (minus the
    grace), is deleted; a set in use, or sent recently, stays."""
    ev = bmp_events
    peer = ev.peer()
    now = time.time()
    in_use, replaced, recent = (ev.attrs(as_path=(65001, asn)) for asn in (1, 2, 3))
    apply(store, [ev.announce(peer, ["10.0.0.0/8"], in_use),
                  ev.announce(peer, ["11.0.0.0/8"], replaced),
                  ev.announce(peer, ["12.0.0.0/8"], recent)], now)
    apply(store, [ev.announce(peer, ["11.0.0.0/8"], in_use),  # `replaced` is unused now
                  ev.withdraw(peer, ["12.0.0.0/8"])], now)  # the state keeps `recent`
    apply(store, [ev.announce(peer, ["13.0.0.0/8"], recent)], now)
    apply(store, [ev.announce(peer, ["13.0.0.0/8"], in_use)], now)  # `recent`: still by 12/8

    def sets():
        return {tuple(r[0]) for r in rows(db_dsn, "SELECT as_path FROM route_attrs")}

    assert sets() == {(65001, 1), (65001, 2), (65001, 3)}
    # Last sent 20 days ago (retention is 7 days, grace 2): only `replaced` goes.
    with psycopg2.connect(db_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE route_attrs SET last_sent = now() - interval '20 days'")
    assert store.maintain(now)["attrs_pruned"] == 1
    assert sets() == {(65001, 1), (65001, 3)}
    # Nothing else is unused; and a set sent recently stays even when unused.
    apply(store, [ev.announce(peer, ["10.0.0.0/8"], replaced)], now)  # sent again
    apply(store, [ev.announce(peer, ["10.0.0.0/8"], in_use)], now)
    store._attrs_pruned_at = None  # pruning runs once a day
    assert store.maintain(now)["attrs_pruned"] == 0
    assert sets() == {(65001, 1), (65001, 2), (65001, 3)}
    # Every announcement is still in the history view (the pruned set came back
    # with the same digest when it was sent again).
    assert rows(db_dsn, "SELECT count(*) FROM route_updates WHERE NOT is_withdrawn "
                        "AND as_path IS NOT NULL")[0][0] == 8
