"""The batching route writer: bounded queue in front, native-thread database work behind.

Shape (SPEC §2, §5):

- Router greenlets call :meth:`Writer.submit` with the events their session
  decoded.  The queue in front is bounded: when the database is slower than
  the routers, ``submit`` blocks, the greenlet stops reading its socket, and
  TCP pushes back on the router.  Memory stays bounded by configuration.
  The queue (intake.py) is fair between routers and lets lane-bound
  submissions (below) skip the line.
- One *batcher* greenlet takes submissions in order and turns them into COPY
  lines (rows.py) until the batch holds ``batch_size`` routes or
  ``batch_timeout`` seconds have passed, then hands the batch to gevent's
  thread pool, where :class:`~pybmpmon.store.database.Store` applies it with
  an ordinary blocking psycopg2 connection.  psycopg2 refuses COPY on green
  connections; on a native thread it works and the hub stays free to serve
  routers.  While one batch is in the database the batcher builds the next,
  so Python and PostgreSQL work at the same time.  These *main* batches are
  committed one after the other, in order, but two may be in the database
  at once, on two connections: the next one is copied into its staging
  table while the one before is merged, and merged while the one before
  commits (``Writer._dispatch``).
- The *lane*, so that a new router's Peer Up is stored within a second, not
  after another router's table load (issue 4).  A submission without routes
  (connect, Initiation, Peer Up, statistics, Termination) from a router that
  has nothing in the main batch being built or in flight goes to a small
  lane batch, applied at once on a connection (and Store) of its own while a
  large main batch may still be in the database.  Lane batches go one at a
  time; what arrives while one runs waits for the next.  Such submissions
  also skip the line in the queue.  Routes, Peer Down and disconnects (they
  touch route_state) never take the lane.
- Order per router still holds: the batcher takes each router's
  submissions in the order they came; a router's submissions go to the lane
  only while none of its earlier ones are in a main batch; a main batch is
  sent only after every lane submission taken before it is committed.  Lane
  and main transactions write different rows (routers and bgp_peers rows are
  per router; a main batch touches only the routers in it), so neither waits
  for the other's locks.  With ``pool_size`` 1 there is no lane.
- Faults: a lost connection or a server restart keeps the batch (main or
  lane), retries it with exponential backoff (the queue fills meanwhile:
  backpressure), logs ``database_unavailable`` then ``database_recovered``,
  and reports the failure as ``route_processing_error`` at ERROR (Sentry's
  logging integration makes that an event).  A batch that the database
  rejects for its content is split in halves until the offending submission
  is isolated and dropped (logged with its route count), so one bad row
  cannot stall the writer forever.

Usable without a gevent server: every blocking call (``submit``, ``flush``,
``stop``) yields to the hub, which runs the batcher.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from typing import Callable, Optional

import gevent
import gevent.event

from pybmpmon.store.database import Store, setup_connection
from pybmpmon.store.flights import Flight, Progress, attempt, may_overlap
from pybmpmon.store.intake import Intake, lane_kind
from pybmpmon.store.pool import ConnectionPool, is_connection_error
from pybmpmon.store.rows import Batch, BatchBuilder, Segment

log = logging.getLogger(__name__)

_FLUSH = "flush"
_IN_FLIGHT_POLL = 0.2  # seconds between looks at the main batch in the database
_LANE_POLL = 0.02  # the same for a lane batch: short, and what waits for it is urgent
_STOP = "stop"


class Writer:
    """Batches decoded events of many routers into PostgreSQL.

    ``max_pending`` bounds the queue in submissions (one per ``submit`` call:
    typically what one socket read decoded into), as many again for
    lane-bound ones.  ``pool_size`` bounds the idle connections kept; one of
    them is the lane's (no lane with 1); with 3 or more, main batches
    alternate between two connections (the pipeline, see :meth:`_dispatch`).
    """

    def __init__(self, dsn: str, batch_size: int = 20000, batch_timeout: float = 1.0,
                 max_pending: int = 64, pool_size: int = 4,
                 retention: Optional[dt.timedelta] = None, retry_initial: float = 0.5,
                 retry_max: float = 10.0, maintenance_interval: float = 3600.0,
                 max_gen: int = 8, reset_connected: bool = True,
                 on_error: Optional[Callable[[BaseException, int], object]] = None):
        self.dsn = dsn
        # Told of each outage once, with the error and the routes it holds up
        # (the service reports it to Sentry as route_processing_error).
        self.on_error = on_error
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.maintenance_interval = maintenance_interval
        self.reset_connected = reset_connected
        # The lane takes one connection of pool_size; it gets its own pool and
        # Store because both serve one thread at a time.  With 3 or more, main
        # batches alternate between two Stores (the pipeline, see _dispatch).
        lane = pool_size > 1
        main_size = pool_size - 1 if lane else pool_size
        second = main_size >= 2
        self.pool = ConnectionPool(dsn, size=main_size - 1 if second else main_size,
                                   setup=setup_connection)
        self.store = Store(self.pool, retention=retention)
        self.stores = [self.store]
        if second:
            self.stores.append(Store(ConnectionPool(dsn, size=1, setup=setup_connection),
                                     retention=retention))
        self._lane_pool = ConnectionPool(dsn, size=1, setup=setup_connection) if lane else None
        self._lane_store = Store(self._lane_pool) if lane else None
        self._intake = Intake(max_pending, lane=lane)
        self._builder = BatchBuilder(max_gen=max_gen)
        self._lane_builder = BatchBuilder(max_gen=max_gen)  # lane submissions not sent yet
        self._batcher: Optional[gevent.Greenlet] = None
        self._main: deque = deque()  # main batches in the database, oldest first (<= 2)
        self._scopes_stored: set = set()  # route scopes that committed batches wrote
        self._lane: Optional[Flight] = None  # the lane batch in the database
        self._next_maintenance = 0.0
        self._outage_since: Optional[float] = None
        self._outage_attempts = 0
        self.stats = {"batches": 0, "lane_batches": 0, "routes": 0, "submitted_routes": 0,
                      "dropped_routes": 0, "retries": 0, "outages": 0,
                      # main batches sent while the one before was in the database,
                      # merged alongside it or after it (see _dispatch)
                      "overlapped": 0, "pipelined": 0, "superseded": 0}

    # -- public API (called from router greenlets) --------------------------

    def start(self) -> None:
        """Start the batcher.  The schema must be migrated already."""
        if self._batcher is None:
            self._batcher = gevent.spawn(self._run)

    def submit(self, router_ip: str, events, received_at: Optional[float] = None) -> None:
        """Queue the decoded events of ``router_ip``; blocks while the queue is full."""
        if received_at is None:
            received_at = time.time()
        self._intake.put(("events", router_ip, events, received_at))

    def router_connected(self, router_ip: str, at: Optional[float] = None) -> None:
        self._intake.put(("connect", router_ip, None, time.time() if at is None else at))

    def router_disconnected(self, router_ip: str, at: Optional[float] = None) -> None:
        """The router's BMP session ended: it is marked disconnected, its routes stale."""
        self._intake.put(("disconnect", router_ip, None, time.time() if at is None else at))

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything submitted before this call is committed.

        False when ``timeout`` ran out first or the writer is not running.
        """
        if self._batcher is None or self._batcher.dead:
            return False
        done = gevent.event.Event()
        self._intake.put_control((_FLUSH, None, done, None))
        return done.wait(timeout)

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Flush everything accepted, stop the batcher, close the connections.

        Returns False when ``timeout`` ran out first (what was still pending is
        then lost, and the rest of the pool is closed anyway).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> Optional[float]:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        ok = True
        if self._batcher is not None:
            done = gevent.event.Event()
            self._intake.put_control((_STOP, None, done, None))
            ok = done.wait(timeout)
            if not ok:
                self._batcher.kill(block=True, timeout=left())
            self._batcher = None
            # A batch still in the database gets what is left of the timeout,
            # no more: the service promises to exit within SHUTDOWN_TIMEOUT.
            for flight in self._in_database():
                flight.result.wait(left())
        for store in self.stores:
            store.close()
        if self._lane_pool is not None:
            self._lane_pool.close()
        return ok

    @property
    def pending(self) -> int:
        """Submissions waiting in the queue."""
        return len(self._intake)

    # -- the batcher greenlet ----------------------------------------------

    def _run(self) -> None:
        try:
            self._startup()
            deadline = None
            while True:
                # Lane-bound submissions queued next go along in the same
                # lane batch (a connect and the router's first events).
                if not self._intake.lane_bound_next():
                    self._send_lane()
                # Wake up for the batch deadline, for maintenance when idle
                # (partitions ahead, retention), and often while a batch is
                # in the database, so a failure there is noticed and retried
                # even when the routers have gone quiet, and the lane is
                # free again soon after its batch is committed.
                now = time.monotonic()
                wake = self._next_maintenance if deadline is None else deadline
                if self._main:
                    wake = min(wake, now + _IN_FLIGHT_POLL)
                if self._lane is not None:
                    wake = min(wake, now + _LANE_POLL)
                item = self._intake.take(max(0.0, wake - now))
                while self._main and self._main[0].result.ready():
                    self._settle(self._main.popleft())
                if self._lane is not None and self._lane.result.ready():
                    self._wait_lane()
                if item is None:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        self._dispatch()
                        deadline = None
                    elif deadline is None and now >= self._next_maintenance:
                        self._dispatch()
                    continue
                kind = item[0]
                if kind == _FLUSH or kind == _STOP:
                    self._dispatch()
                    self._drain()
                    item[2].set()
                    if kind == _STOP:
                        return
                    deadline = None
                    continue
                lane = self._takes_lane(item)
                self._add(item, lane)
                if deadline is None and not lane:
                    deadline = time.monotonic() + self.batch_timeout
                # The deadline holds even while submissions keep coming.
                if deadline is not None and (self._builder.route_count >= self.batch_size
                                             or time.monotonic() >= deadline):
                    self._dispatch()
                    deadline = None
                # Building lines is CPU work in the hub's thread: let the
                # routers' greenlets run between submissions.
                gevent.sleep(0)
        except gevent.GreenletExit:
            raise
        except Exception:
            log.exception("route_writer_crashed")
            raise

    def _takes_lane(self, item) -> bool:
        """Whether ``item`` goes to the lane: no routes, and nothing of its router
        in the main batch being built or in flight (those are applied first)."""
        router_ip = item[1]
        if self._lane_store is None or router_ip in self._builder.routers:
            return False
        if any(router_ip in flight.batch.routers for flight in self._main):
            return False
        return lane_kind(item)

    def _add(self, item, lane: bool) -> None:
        kind, router_ip, events, at = item
        builder = self._lane_builder if lane else self._builder
        try:
            if kind == "events":
                self.stats["submitted_routes"] += builder.add_events(router_ip, events, at)
            elif kind == "connect":
                builder.add_connect(router_ip, at)
            else:
                builder.add_disconnect(router_ip, at)
        except Exception as exc:  # noqa: BLE001 - one bad submission must not stop the writer
            # The builder may hold part of this submission: start the batch
            # over from its recorded items, without the bad one.
            rebuilt = BatchBuilder(max_gen=builder.max_gen)
            for good in builder.items[:-1]:
                rebuilt.add_item(good)
            if lane:
                self._lane_builder = rebuilt
            else:
                self._builder = rebuilt
            log.error("route_processing_error", exc_info=True,
                      extra={"route_count": _count_routes(events), "error": str(exc),
                             "router_ip": router_ip})
            if self.on_error is not None:
                self.on_error(exc, _count_routes(events))

    def _startup(self) -> None:
        """Routers a previous run left connected are disconnected now; partitions made."""
        if self.reset_connected:
            routers = self._call(self.store.connected_routers, what="startup")
            for router_ip in routers:
                self._builder.add_disconnect(router_ip, time.time())
            if routers:
                log.info("routers_marked_disconnected", extra={"routers": routers})
        self._maintain()

    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.maintenance_interval
            try:
                self._call(self.store.maintain, what="maintenance")
            except Exception:  # noqa: BLE001 - retried at the next interval
                log.exception("database_maintenance_failed")

    def _dispatch(self) -> None:
        """Send the batch being built to the database, after everything sent before.

        Strategy (the pipeline): main batches alternate between two Stores,
        so two may be in the database at once.  Batch N+1 copies its routes
        into its connection's stage (temporary tables only: no lock N could
        wait for) while N is merged, and merges while N commits, or at once,
        alongside N, when the two cannot wait for each other's rows (no
        common route, no new scope, no operation: a table load); its COMMIT
        waits for N's (see flights.py).  On two cores this keeps the second
        one busy, and the COMMIT's wait for the disk off the critical path.
        Batches still commit one after the other, in order, each in one
        transaction.  Maintenance runs with no batch in the database.
        """
        if self._builder.empty:
            self._drain()
            self._maintain()
            return
        if time.monotonic() >= self._next_maintenance:
            self._drain()
            self._maintain()
        batch = self._builder.take()
        # What the lane took before this batch's submissions comes first.
        self._wait_lane()
        self._send_lane()
        self._wait_lane()
        while len(self._main) >= len(self.stores):
            self._settle(self._main.popleft())
        busy = [flight.store for flight in self._main]
        store = next(store for store in self.stores if store not in busy)
        before = parallel = None
        if self._main:
            before = self._main[-1].progress
            parallel = may_overlap(self._main[-1].batch, batch, self._scopes_stored)
            self.stats["overlapped" if parallel else "pipelined"] += 1
        self._main.append(self._launch(Flight(batch, store), before, bool(parallel)))

    def _in_database(self) -> list:
        """The batches in the database: the main ones, oldest first, then the lane's."""
        return list(self._main) + ([self._lane] if self._lane is not None else [])

    def _send_lane(self) -> None:
        """Send the lane's waiting submissions, unless a lane batch is in the database."""
        if self._lane is None and not self._lane_builder.empty:
            self._lane = self._launch(Flight(self._lane_builder.take(), self._lane_store))

    def _drain(self) -> None:
        """Wait until every batch sent, and every lane submission, is committed."""
        self._wait_lane()
        self._send_lane()
        while self._main:
            self._settle(self._main.popleft())
        self._wait_lane()

    def _wait_lane(self) -> None:
        if self._lane is not None:
            self._settle(self._lane)
            self._lane = None

    def _launch(self, flight: Flight, before: Optional[Progress] = None,
                parallel: bool = False) -> Flight:
        """Start an attempt at ``flight``'s batch; ``before``: the attempt at the batch
        before it, still in the database; ``parallel``: see flights.py."""
        flight.progress = Progress()
        pool = gevent.get_hub().threadpool
        flight.result = pool.spawn(attempt, flight.batch, flight.store, self._builder.max_gen,
                                   flight.progress, before, parallel)
        return flight

    def _settle(self, flight: Flight) -> None:
        """Wait for ``flight``; retry its batch until it is committed."""
        batch = flight.batch
        while True:
            try:
                outcome = flight.result.get()
            except Exception as exc:  # noqa: BLE001 - every failure is retried or reported
                if not is_connection_error(exc):
                    # apply_isolating only lets connection errors out; anything
                    # else is a bug: report and keep the batch (retry).
                    log.error("route_processing_error", exc_info=True,
                              extra={"route_count": batch.route_count, "error": str(exc)})
                self._outage(exc, batch,
                             what="lane batch" if flight.store is self._lane_store else "batch")
                self._launch(flight)
                continue
            if not outcome.get("superseded"):
                break
            self.stats["superseded"] += 1
            # The batch before failed, and is committed by now (batches settle
            # in order): this one again, on its own.
            self._launch(flight)
        if not outcome.get("dropped"):
            # Its attribute sets and scopes are in the database: later batches
            # name the sets only, and may merge alongside others in the scopes.
            self._builder.confirm(batch)
            for part in batch.parts:
                if isinstance(part, Segment):
                    self._scopes_stored.update(part.gens)
        # An outage that failed the other batch too is over once that one is through.
        if not any(other is not flight and other.failed for other in self._in_database()):
            self._recovered(batch)
        self.stats["batches"] += 1
        if flight.store is self._lane_store:
            self.stats["lane_batches"] += 1
        self.stats["routes"] += batch.route_count - outcome.get("dropped", 0)
        self.stats["dropped_routes"] += outcome.get("dropped", 0)

    def _call(self, func, what: str):
        """Run ``func`` on a native thread, retrying through database outages."""
        pool = gevent.get_hub().threadpool
        while True:
            try:
                result = pool.spawn(func).get()
            except Exception as exc:  # noqa: BLE001
                if not is_connection_error(exc):
                    raise
                self._outage(exc, None, what=what)
                continue
            self._recovered(None)
            return result

    def _outage(self, exc: BaseException, batch: Optional[Batch], what: str = "batch") -> None:
        """Log the failure (first time loudly), then sleep the backoff.

        route_count: the routes the outage holds up, i.e. those of the failed
        batch, of the main batches in the database, of the batch being built and of
        the queued submissions (a lane batch that fails first has none of its
        own).
        """
        routes = self._held_up(batch)
        self.stats["retries"] += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_attempts = 0
            self.stats["outages"] += 1
            log.warning("database_unavailable",
                        extra={"error": str(exc).strip(), "route_count": routes,
                               "pending": len(self._intake), "operation": what})
            log.error("route_processing_error",
                      extra={"error": str(exc).strip(), "route_count": routes,
                             "error_type": type(exc).__name__})
            if self.on_error is not None:
                self.on_error(exc, routes)
        self._outage_attempts += 1
        delay = min(self.retry_max, self.retry_initial * 2 ** (self._outage_attempts - 1))
        log.debug("database_retry", extra={"attempt": self._outage_attempts, "delay_s": delay,
                                           "route_count": routes, "operation": what})
        gevent.sleep(delay)

    def _held_up(self, batch: Optional[Batch]) -> int:
        routes = self._builder.route_count
        if batch is not None:
            routes += batch.route_count
        for flight in self._main:
            if flight.batch is not batch:
                routes += flight.batch.route_count
        for item in self._intake.waiting():
            if item[0] == "events":
                routes += _count_routes(item[2])
        return routes

    def _recovered(self, batch: Optional[Batch]) -> None:
        if self._outage_since is not None:
            log.info("database_recovered",
                     extra={"downtime_s": round(time.monotonic() - self._outage_since, 3),
                            "attempts": self._outage_attempts,
                            "route_count": batch.route_count if batch is not None else 0})
            self._outage_since = None
            self._outage_attempts = 0
            # The idle connections of a pool that sat out the outage are
            # likely dead (a server restart): a fresh one beats a second
            # outage at its next use.  Not while a thread may be using it.
            busy = {flight.store for flight in self._in_database()}
            for store in self.stores + [self._lane_store]:
                if store is not None and store not in busy:
                    store.close()

    # -- on the native thread ----------------------------------------------

def _count_routes(events) -> int:
    count = 0
    for event in events or ():
        update = getattr(event, "update", None)
        if update is not None:
            count += sum(len(rs.nlri) for rs in update.announced + update.withdrawn)
    return count
