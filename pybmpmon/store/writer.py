"""The batching route writer: bounded queue in front, native-thread database work behind.

Shape (SPEC §2, §5):

- Router greenlets call :meth:`Writer.submit` with the events their session
  decoded.  The queue in front is bounded: when the database is slower than
  the routers, ``submit`` blocks, the greenlet stops reading its socket, and
  TCP pushes back on the router.  Memory stays bounded by configuration.
- One *batcher* greenlet takes submissions in order and turns them into COPY
  lines (rows.py) until the batch holds ``batch_size`` routes or
  ``batch_timeout`` seconds have passed, then hands the batch to gevent's
  thread pool, where :class:`~pybmpmon.store.database.Store` applies it with
  an ordinary blocking psycopg2 connection.  psycopg2 refuses COPY on green
  (wait-callback) connections; on a native thread it works and the hub stays
  free to serve routers.  While one batch is in the database the batcher
  builds the next, so Python and PostgreSQL work at the same time.
- One flush path only: batches are applied one after the other, in order.
- Faults: a lost connection or a server restart keeps the batch, retries it
  with exponential backoff (the queue fills meanwhile: backpressure), logs
  ``database_unavailable`` then ``database_recovered``, and reports the failure
  as ``route_processing_error`` at ERROR (Sentry's logging integration makes
  that an event).  A batch that the database rejects for its content is split
  in halves until the offending submission is isolated and dropped (logged
  with its route count), so one bad row cannot stall the writer forever.

Usable without a gevent server: every blocking call (``submit``, ``flush``,
``stop``) yields to the hub, which runs the batcher.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Callable, Optional

import gevent
import gevent.event
import gevent.queue
import psycopg2

from pybmpmon.store.database import Store, setup_connection
from pybmpmon.store.pool import ConnectionPool, is_connection_error
from pybmpmon.store.rows import Batch, BatchBuilder

log = logging.getLogger(__name__)

_FLUSH = "flush"
_IN_FLIGHT_POLL = 0.2  # seconds between looks at the batch in the database
_STOP = "stop"


class Writer:
    """Batches decoded events of many routers into PostgreSQL.

    ``max_pending`` bounds the queue in submissions (one per ``submit`` call:
    typically what one socket read decoded into).
    """

    def __init__(self, dsn: str, batch_size: int = 20000, batch_timeout: float = 1.0,
                 max_pending: int = 64, pool_size: int = 2,
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
        self.pool = ConnectionPool(dsn, size=pool_size, setup=setup_connection)
        self.store = Store(self.pool, retention=retention)
        self._queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=max_pending)
        self._builder = BatchBuilder(max_gen=max_gen)
        self._batcher: Optional[gevent.Greenlet] = None
        self._in_flight = None  # (ThreadResult, Batch) of the batch in the database
        self._next_maintenance = 0.0
        self._outage_since: Optional[float] = None
        self._outage_attempts = 0
        self.stats = {"batches": 0, "routes": 0, "submitted_routes": 0, "dropped_routes": 0,
                      "retries": 0, "outages": 0}

    # -- public API (called from router greenlets) --------------------------

    def start(self) -> None:
        """Start the batcher.  The schema must be migrated already."""
        if self._batcher is None:
            self._batcher = gevent.spawn(self._run)

    def submit(self, router_ip: str, events, received_at: Optional[float] = None) -> None:
        """Queue the decoded events of ``router_ip``; blocks while the queue is full."""
        if received_at is None:
            received_at = time.time()
        self._queue.put(("events", router_ip, events, received_at))

    def router_connected(self, router_ip: str, at: Optional[float] = None) -> None:
        self._queue.put(("connect", router_ip, None, time.time() if at is None else at))

    def router_disconnected(self, router_ip: str, at: Optional[float] = None) -> None:
        """The router's BMP session ended: it is marked disconnected, its routes stale."""
        self._queue.put(("disconnect", router_ip, None, time.time() if at is None else at))

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything submitted before this call is committed.

        False when ``timeout`` ran out first or the writer is not running.
        """
        if self._batcher is None or self._batcher.dead:
            return False
        started = time.monotonic()
        done = gevent.event.Event()
        try:
            self._queue.put((_FLUSH, None, done, None), timeout=timeout)
        except gevent.queue.Full:
            return False
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - started))
        return done.wait(timeout)

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Flush everything accepted, stop the batcher, close the connections.

        Returns False when ``timeout`` ran out first (what was still pending is
        then lost, and the rest of the pool is closed anyway).
        """
        if self._batcher is None:
            self.pool.close()
            return True
        started = time.monotonic()
        done = gevent.event.Event()
        try:
            self._queue.put((_STOP, None, done, None), timeout=timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
            ok = done.wait(timeout)
        except gevent.queue.Full:
            ok = False
        if not ok:
            self._batcher.kill(block=True, timeout=5)
        self._batcher = None
        if self._in_flight is not None:
            self._in_flight[0].wait(5)
        self.pool.close()
        return ok

    @property
    def pending(self) -> int:
        """Submissions waiting in the queue."""
        return self._queue.qsize()

    # -- the batcher greenlet ----------------------------------------------

    def _run(self) -> None:
        try:
            self._startup()
            deadline = None
            while True:
                # Wake up for the batch deadline, for maintenance when idle
                # (partitions ahead, retention), and often while a batch is
                # in the database, so a failure there is noticed and retried
                # even when the routers have gone quiet.
                now = time.monotonic()
                wake = self._next_maintenance if deadline is None else deadline
                if self._in_flight is not None:
                    wake = min(wake, now + _IN_FLIGHT_POLL)
                try:
                    item = self._queue.get(timeout=max(0.0, wake - now))
                except gevent.queue.Empty:
                    item = None
                if self._in_flight is not None and self._in_flight[0].ready():
                    self._wait_in_flight()
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
                    self._wait_in_flight()
                    item[2].set()
                    if kind == _STOP:
                        return
                    deadline = None
                    continue
                self._add(item)
                if deadline is None:
                    deadline = time.monotonic() + self.batch_timeout
                # The deadline holds even while submissions keep coming.
                if self._builder.route_count >= self.batch_size or time.monotonic() >= deadline:
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

    def _add(self, item) -> None:
        kind, router_ip, events, at = item
        try:
            if kind == "events":
                self.stats["submitted_routes"] += self._builder.add_events(router_ip, events, at)
            elif kind == "connect":
                self._builder.add_connect(router_ip, at)
            else:
                self._builder.add_disconnect(router_ip, at)
        except Exception as exc:  # noqa: BLE001 - one bad submission must not stop the writer
            # The builder may hold part of this submission: start the batch
            # over from its recorded items, without the bad one.
            items = self._builder.items[:-1]
            self._builder = BatchBuilder(max_gen=self._builder.max_gen)
            for good in items:
                self._builder.add_item(good)
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
        """Send the batch being built to the database, after the one in flight."""
        self._wait_in_flight()
        self._maintain()
        if self._builder.empty:
            return
        batch = self._builder.take()
        pool = gevent.get_hub().threadpool
        self._in_flight = (pool.spawn(self._apply_isolating, batch), batch)

    def _wait_in_flight(self) -> None:
        """Wait for the batch in the database; retry it until it is committed."""
        while self._in_flight is not None:
            result, batch = self._in_flight
            try:
                outcome = result.get()
            except Exception as exc:  # noqa: BLE001 - every failure is retried or reported
                if not is_connection_error(exc):
                    # _apply_isolating only lets connection errors out; anything
                    # else is a bug: report and keep the batch (retry).
                    log.error("route_processing_error", exc_info=True,
                              extra={"route_count": batch.route_count, "error": str(exc)})
                self._outage(exc, batch)
                pool = gevent.get_hub().threadpool
                self._in_flight = (pool.spawn(self._apply_isolating, batch), batch)
                continue
            self._in_flight = None
            if not outcome.get("dropped"):
                # Its attribute sets are in the database: later batches name them only.
                self._builder.confirm(batch)
            self._recovered(batch)
            self.stats["batches"] += 1
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
        """Log the failure (first time loudly), then sleep the backoff."""
        routes = batch.route_count if batch is not None else 0
        self.stats["retries"] += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_attempts = 0
            self.stats["outages"] += 1
            log.warning("database_unavailable",
                        extra={"error": str(exc).strip(), "route_count": routes,
                               "pending": self._queue.qsize(), "operation": what})
            log.error("route_processing_error",
                      extra={"error": str(exc).strip(), "route_count": routes,
                             "error_type": type(exc).__name__})
            if self.on_error is not None:
                self.on_error(exc, routes)
        self._outage_attempts += 1
        delay = min(self.retry_max, self.retry_initial * 2 ** (self._outage_attempts - 1))
        log.debug("database_retry", extra={"attempt": self._outage_attempts, "delay_s": delay,
                                           "route_count": routes})
        gevent.sleep(delay)

    def _recovered(self, batch: Optional[Batch]) -> None:
        if self._outage_since is not None:
            log.info("database_recovered",
                     extra={"downtime_s": round(time.monotonic() - self._outage_since, 3),
                            "attempts": self._outage_attempts,
                            "route_count": batch.route_count if batch is not None else 0})
            self._outage_since = None
            self._outage_attempts = 0

    # -- on the native thread ----------------------------------------------

    def _apply_isolating(self, batch: Batch) -> dict:
        """Apply ``batch``; if its content is rejected, split until the culprit is alone.

        Connection errors propagate (the batcher retries the whole batch).
        """
        error = None
        for attempt in range(2):
            try:
                return self.store.apply(batch)
            except psycopg2.Error as exc:
                if is_connection_error(exc):
                    raise
                error = exc
                # Once more with fresh knowledge of the database (a partition
                # dropped behind our back, say) before blaming the content.
                self.store.forget()
        halves = _split(batch.items)
        if halves is None:
            log.error("route_processing_error",
                      extra={"route_count": batch.route_count, "error": str(error).strip(),
                             "error_type": type(error).__name__, "dropped": True})
            return {"dropped": batch.route_count}
        dropped = 0
        for number, half in enumerate(halves):
            builder = BatchBuilder(max_gen=self._builder.max_gen)
            for item in half:
                builder.add_item(item)
            # Derived ids: if the connection fails after the first half was
            # committed, the retry of the whole batch skips that half.
            half_id = str(uuid.uuid5(uuid.UUID(batch.batch_id), str(number)))
            dropped += self._apply_isolating(builder.take(half_id)).get("dropped", 0)
        return {"dropped": dropped}


def _count_routes(events) -> int:
    count = 0
    for event in events or ():
        update = getattr(event, "update", None)
        if update is not None:
            count += sum(len(rs.nlri) for rs in update.announced + update.withdrawn)
    return count


def _split(items: list):
    """Two halves of a batch's submissions, splitting one submission's events if alone."""
    if len(items) > 1:
        middle = len(items) // 2
        return items[:middle], items[middle:]
    kind, router_ip, events, at = items[0]
    if kind == "events" and len(events) > 1:
        middle = len(events) // 2
        return ([(kind, router_ip, events[:middle], at)],
                [(kind, router_ip, events[middle:], at)])
    return None
