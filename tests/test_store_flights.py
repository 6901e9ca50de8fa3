"""Two main batches in the database at once (store/flights.py): overlap, order, faults."""

from __future__ import annotations

import time

from gevent.monkey import get_original
from writing import ROUTER, prefixes, scalar

from pybmpmon.store import flights
from pybmpmon.store.flights import may_overlap


def test_pipeline_alternates_connections_and_keeps_order(db_dsn, make_writer, bmp_events):
    """Batches go to two connections in turn, the next one in the database while
    the one before is merged or committed; the same routes flapping across
    batches end in the state of the last event, counted once each."""
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=300, pool_size=4)
    assert len(writer.stores) == 2
    applied = {id(store): 0 for store in writer.stores}
    for store in writer.stores:
        def counting(batch, *hooks, store=store, apply=store.apply):
            result = apply(batch, *hooks)
            applied[id(store)] += 1
            return result
        store.apply = counting
    peer = ev.peer()
    routes = prefixes(200)
    rounds = 12
    for i in range(rounds):
        if i % 2:
            writer.submit(ROUTER, [ev.withdraw(peer, routes)])
        else:
            writer.submit(ROUTER, [ev.announce(peer, routes, ev.attrs(med=i))])
    assert writer.flush(timeout=60)
    assert all(count >= 2 for count in applied.values()), applied
    # Sent while the one before was in the database; never side by side,
    # since every batch holds the same routes.
    assert writer.stats["pipelined"] >= 1, writer.stats
    assert writer.stats["overlapped"] == 0, writer.stats
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == rounds * 200
    # The last event of each route was a withdrawal, after an announcement with med 10.
    assert scalar(db_dsn, "SELECT count(*) FROM route_state WHERE is_withdrawn AND med = 10 "
                  "AND learn_count = 6 AND withdraw_count = 6") == 200


def test_a_batch_after_one_that_fails_to_commit_is_applied_after_its_retry(
        db_dsn, make_writer, bmp_events):
    """Batch 2 merges while batch 1 commits; batch 1's connection dies at its
    COMMIT.  Batch 2 must not commit first: it is rolled back, then applied
    again after batch 1's retry, so the routes end with batch 2's attributes."""
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100, batch_timeout=0.05, pool_size=4,
                         retry_initial=0.1)
    first, second = writer.stores
    handed = []
    get = first.pool.get
    first.pool.get = lambda: handed.append(get()) or handed[-1]
    sleep = get_original("time", "sleep")  # a native thread's sleep
    killed = []
    entered = []  # batch 2's attempts
    apply_first = first.apply

    def dying(batch, before_merge=None, before_commit=None, before_shared=None):
        if killed:
            return apply_first(batch, before_merge, before_commit, before_shared)

        def kill() -> bool:
            deadline = time.monotonic() + 10
            while not entered and time.monotonic() < deadline:
                sleep(0.01)  # until batch 2 is in the database
            go_on = before_commit()  # batch 2 may merge now
            sleep(0.5)
            killed.append(len(entered))
            scalar(db_dsn, "SELECT pg_terminate_backend(%s)", handed[-1].info.backend_pid)
            return go_on
        return apply_first(batch, before_merge, kill, before_shared)

    first.apply = dying
    superseded = []
    apply_second = second.apply

    def recording(batch, *hooks):
        entered.append(batch.batch_id)
        result = apply_second(batch, *hooks)
        superseded.append((result["superseded"], "merge" in second.timings))
        return result

    second.apply = recording
    peer = ev.peer()
    routes = prefixes(100)
    writer.submit(ROUTER, [ev.announce(peer, routes, ev.attrs(med=1))])
    writer.submit(ROUTER, [ev.announce(peer, routes, ev.attrs(med=2))])
    assert writer.flush(timeout=60)
    assert killed == [1]
    # Merged while batch 1 committed, rolled back; then applied on its own.
    assert superseded == [(True, True), (False, True)]
    assert writer.stats["outages"] == 1
    assert scalar(db_dsn, "SELECT count(*) FROM route_state WHERE med = 2 "
                  "AND learn_count = 2 AND NOT is_withdrawn") == 100
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 200
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates WHERE med = 2") == 100


def test_batches_without_common_routes_merge_side_by_side(db_dsn, make_writer, bmp_events):
    """Key-disjoint batches of known scopes merge at the same time on the two
    connections; overlapping ones, or ones with operations, wait their turn."""
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100, batch_timeout=0.05, pool_size=4)
    peer = ev.peer()
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100))])
    assert writer.flush(timeout=60)  # the scope is in the database now
    for i in range(1, 9):
        writer.submit(ROUTER, [ev.announce(peer, prefixes(100, start=100 * i))])
    assert writer.flush(timeout=60)
    assert writer.stats["overlapped"] >= 1, writer.stats
    assert scalar(db_dsn, "SELECT count(*) FROM route_state") == 900
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 900
    # Which pairs may overlap.
    builder = writer._builder

    def batch(*events):
        builder.add_events(ROUTER, list(events))
        return builder.take()

    first = batch(ev.announce(peer, prefixes(10)))
    stored = writer._scopes_stored
    assert stored == {(ROUTER, "192.0.2.1", "0", "adj_in_pre", "ipv4_unicast")}
    assert may_overlap(first, batch(ev.announce(peer, prefixes(10, start=10))), stored)
    assert not may_overlap(first, batch(ev.withdraw(peer, prefixes(1, start=9))), stored)
    assert not may_overlap(first, batch(ev.announce(peer, prefixes(1, start=50)),
                                        ev.peer_down(peer)), stored)
    other_view = ev.peer(post_policy=True)  # a scope not in the database yet
    assert not may_overlap(first, batch(ev.announce(other_view, prefixes(1))), stored)


def test_a_side_by_side_batch_gives_way_when_the_one_before_is_slow(
        db_dsn, make_writer, bmp_events, monkeypatch):
    """A batch merged alongside the one before waits a bounded time for it to
    merge; past that it rolls back (freeing any lock the other might wait for)
    and is applied again after it."""
    monkeypatch.setattr(flights, "OVERLAP_PATIENCE", 0.3)
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100, batch_timeout=0.05, pool_size=4)
    peer = ev.peer()
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100))])
    assert writer.flush(timeout=60)
    sleep = get_original("time", "sleep")
    calls = []
    for store in writer.stores:
        def slow_first(batch, *hooks, apply=store.apply):
            calls.append(batch.batch_id)
            if len(calls) == 1:
                sleep(1.0)  # the first batch of the pair is slow to merge
            result = apply(batch, *hooks)
            calls.append((batch.batch_id, result["superseded"]))
            return result
        store.apply = slow_first
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100, start=100), ev.attrs(med=1))])
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100, start=200), ev.attrs(med=2))])
    assert writer.flush(timeout=60)
    assert writer.stats["overlapped"] == 1 and writer.stats["superseded"] == 1, writer.stats
    outcomes = [call for call in calls if isinstance(call, tuple)]
    assert [superseded for _id, superseded in outcomes] == [True, False, False]
    assert outcomes[0][0] == outcomes[2][0]  # the second batch, rolled back, then again
    assert scalar(db_dsn, "SELECT count(*) FROM route_state WHERE med = 2") == 100
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 300


def test_a_batch_gives_way_when_the_one_before_is_slow_to_commit(
        db_dsn, make_writer, bmp_events, monkeypatch):
    """The wait for the batch before to commit is bounded too: past it, the
    batch rolls back and is applied again after it, in order."""
    monkeypatch.setattr(flights, "COMMIT_PATIENCE", 0.3)
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100, batch_timeout=0.05, pool_size=4)
    sleep = get_original("time", "sleep")
    outcomes = []
    first = []
    for store in writer.stores:
        def slow_commit(batch, before_merge=None, before_commit=None, before_shared=None,
                        apply=store.apply):
            first.append(first[0] if first else batch.batch_id)

            def late() -> bool:
                go_on = before_commit()
                if batch.batch_id == first[0] and not outcomes:
                    sleep(1.0)  # the first batch is slow to commit
                return go_on
            result = apply(batch, before_merge, late, before_shared)
            outcomes.append((batch.batch_id, result["superseded"]))
            return result
        store.apply = slow_commit
    peer = ev.peer()
    # Another router (a row both write, a route or the router's own, would
    # make the second wait for the first's lock instead), so a scope new to
    # the database: merged one after the other, not side by side.
    writer.submit(ROUTER, [ev.announce(peer, prefixes(100), ev.attrs(med=1))])
    writer.submit("10.0.0.2", [ev.announce(peer, prefixes(100), ev.attrs(med=2))])
    assert writer.flush(timeout=60)
    assert writer.stats["pipelined"] == 1 and writer.stats["superseded"] == 1, writer.stats
    assert [superseded for _id, superseded in outcomes] == [True, False, False]
    assert outcomes[0][0] == outcomes[2][0] != outcomes[1][0]
    assert scalar(db_dsn, "SELECT count(*) FROM route_state WHERE med = 2") == 100
    assert scalar(db_dsn, "SELECT count(*) FROM route_updates") == 200


def test_one_main_connection_means_no_pipeline(db_dsn, make_writer, bmp_events):
    ev = bmp_events
    writer = make_writer(db_dsn, batch_size=100, pool_size=2)
    assert len(writer.stores) == 1 and writer._lane_store is not None
    for i in range(4):
        writer.submit(ROUTER, [ev.announce(ev.peer(), prefixes(100, start=100 * i))])
    assert writer.flush(timeout=60)
    assert writer.stats["batches"] >= 4
    assert writer.stats["pipelined"] == writer.stats["overlapped"] == 0, writer.stats
    assert scalar(db_dsn, "SELECT count(*) FROM route_state") == 400
