"""Applying batches to PostgreSQL: blocking code, run on a native thread.

:class:`Store` knows rows and SQL, not sockets, BMP or gevent.  One call of
:meth:`Store.apply` is one transaction: every part of the batch in order,
plus a ``writer_batches`` row that makes a retried batch (after a COMMIT whose
acknowledgement was lost) a no-op.  Route segments go: COPY into the
per-connection ``stage`` table (and new attribute sets into ``stage_attrs``),
scopes ensured, history inserted, then the state merged once per generation
(see rows.py).  The rows other batches write too (attribute sets, routers,
peers) come last, once per batch (:meth:`Store._shared_rows`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Callable, Optional

from psycopg2.errors import UniqueViolation
from psycopg2.extras import execute_values

from pybmpmon.store import sql
from pybmpmon.store.pool import ConnectionPool
from pybmpmon.store.rows import Batch, Op, Segment

log = logging.getLogger(__name__)

PARTITION_PREFIX = "route_history_p"
PARTITION_LOCK_KEY = 0x70796264  # advisory lock serialising partition DDL
# Partitions are made this many days ahead of the newest row seen.
DAYS_AHEAD = 2
# Attribute sets: pruned once a day, when last sent more than this before the
# retention cutoff (history rows are stamped up to a day before receipt, and
# a writer names a set for an hour after sending it).
ATTRS_PRUNE_INTERVAL = 86400.0
ATTRS_GRACE = 2 * 86400.0
COPY_BUFFER = 8 << 20
FRESH_BACKOFF_MAX = 64  # segments: see Store._merge


def _values(cur, statement: str, template, rows) -> str:
    """``statement`` with its ``VALUES %s`` filled in, as text (to send with others)."""
    template = template or "(" + ", ".join(["%s"] * len(rows[0])) + ")"
    values = b",".join(cur.mogrify(template, row) for row in rows).decode()
    return statement.replace("%s", values, 1)


def setup_connection(conn) -> None:
    """Session settings and the staging table of a writer connection."""
    with conn.cursor() as cur:
        cur.execute("SET temp_buffers = '128MB'")  # must precede the temp table
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(sql.CREATE_STAGE)
        cur.execute(sql.CREATE_STAGE_ATTRS)
        cur.execute(sql.CREATE_STAGE_SCOPES)


class _GiveWay(Exception):
    """A hook of Store.apply said to roll back (the batch before failed, say)."""


class _LinesReader:
    """A file-like view of a list of lines for copy_expert, without joining them all."""

    def __init__(self, lines: list):
        self._lines = lines
        self._pos = 0

    def read(self, size: int = -1) -> str:
        lines = self._lines
        start = self._pos
        if start >= len(lines):
            return ""
        end = start
        total = 0
        limit = size if size and size > 0 else 1 << 62
        while end < len(lines) and total < limit:
            total += len(lines[end])
            end += 1
        self._pos = end
        return "".join(lines[start:end])

    readline = read


class Store:
    """The database side of the writer.  Not thread-safe: one caller at a time."""

    def __init__(self, pool: ConnectionPool, retention: Optional[dt.timedelta] = None):
        self.pool = pool
        self.retention = retention
        self._partition_days: Optional[set] = None
        self.timings: dict = {}  # seconds per step of the last batch (benchmarks, debugging)
        self._native_partitions: Optional[bool] = None
        self._attrs_pruned_at: Optional[float] = None
        # New keys as a plain INSERT (see _merge): segments to skip before
        # the next attempt, and the skip after the next failure.
        self._fresh_skip = 0
        self._fresh_backoff = 1
        self.fresh_attempts = self.fresh_failures = 0  # for tests and benchmarks

    # -- batches -----------------------------------------------------------

    def close(self) -> None:
        self.pool.close()

    def apply(self, batch: Batch, before_merge: Optional[Callable[[], bool]] = None,
              before_commit: Optional[Callable[[], bool]] = None,
              before_shared: Optional[Callable[[], bool]] = None) -> dict:
        """Apply ``batch`` in one transaction; returns counts of what it did.

        The hooks let the writer overlap this batch with the one before it
        (see writer.py): ``before_merge`` runs once the first route segment
        is copied into this connection's stage (temporary tables only: no
        lock another transaction could wait for), ``before_shared`` before
        the rows other batches write too (:meth:`_shared_rows`),
        ``before_commit`` once everything but the COMMIT is done.  Each may
        block until the batch before has got that far; if it returns False
        (the batch before failed, say), the transaction is rolled back and
        the result says ``superseded``: the caller applies the batch again
        later.
        """
        self.ensure_partitions(batch.days)
        result = {"routes": batch.route_count, "withdrawn_by_peer_down": 0, "swept": 0,
                  "stale_scopes": 0, "duplicate": False, "superseded": False}
        self.timings = timings = {}
        clock = time.perf_counter
        with self.pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    first = next((p for p in batch.parts if isinstance(p, Segment)), None)
                    if first is not None:
                        started = clock()
                        self._copy_stage(cur, first)
                        timings["stage"] = clock() - started
                    self._hold(before_merge, timings)
                    cur.execute(sql.CLAIM_BATCH, (batch.batch_id,))
                    if cur.rowcount == 0:
                        conn.rollback()
                        result["duplicate"] = True
                        return result
                    peers: dict = {}
                    attrs = False
                    for part in batch.parts:
                        if isinstance(part, Segment):
                            self._segment(cur, part, timings, staged=part is first)
                            peers.update(part.peers)
                            attrs = attrs or bool(part.attrs)
                        else:
                            self._op(cur, part, result)
                    self._hold(before_shared, timings)
                    self._shared_rows(cur, batch, peers, attrs)
                self._hold(before_commit, timings)
            except _GiveWay:
                conn.rollback()
                result["superseded"] = True
                return result
            started = clock()
            conn.commit()
            timings["commit"] = clock() - started
        return result

    @staticmethod
    def _hold(hook: Optional[Callable[[], bool]], timings: dict) -> None:
        """Run one of apply()'s hooks; raise _GiveWay when it says not to go on."""
        if hook is None:
            return
        started = time.perf_counter()
        go_on = hook()
        timings["wait"] = timings.get("wait", 0.0) + time.perf_counter() - started
        if not go_on:
            raise _GiveWay

    @staticmethod
    def _shared_rows(cur, batch: Batch, peers: dict, attrs: bool) -> None:
        """The rows other batches may write too: attribute sets, routers, peers.

        Strategy: they come last, after the merge.  A row that the batch
        before is still committing (the same router, a set both carry) makes
        this transaction wait for that COMMIT; here the wait costs nothing,
        since this batch's own COMMIT waits for it anyway (writer.py), while
        at the start it would hold up the whole merge.  Order does not
        matter for them: history and state name sets by digest, with no
        foreign key, and the touches only raise last_seen or fill blanks.
        """
        statements = []
        if attrs:
            statements.append(sql.STORE_ATTRS)  # every segment's sets, in stage_attrs
        if peers:
            rows = [(key[0], key[1], key[2], key[3], asn, str(bgp_id), at, at)
                    for key, (asn, bgp_id, at) in peers.items()]
            statements.append(_values(cur, sql.TOUCH_PEERS, sql.TOUCH_PEERS_TEMPLATE, rows))
        if batch.routers:
            statements.append(_values(cur, sql.TOUCH_ROUTERS, sql.TOUCH_ROUTERS_TEMPLATE,
                                      [(r, t, t) for r, t in batch.routers.items()]))
        if statements:
            cur.execute(";\n".join(statements))

    @staticmethod
    def _copy_stage(cur, seg: Segment, first: bool = True) -> None:
        """The segment's lines into the stage; its attribute sets join the batch's."""
        cur.execute(sql.TRUNCATE_STAGE if first else sql.TRUNCATE_SEGMENT_STAGE)
        cur.copy_expert(sql.COPY_STAGE, _LinesReader(seg.lines), size=COPY_BUFFER)
        if seg.attrs:
            cur.copy_expert(sql.COPY_STAGE_ATTRS, _LinesReader(seg.attrs), size=COPY_BUFFER)

    def _segment(self, cur, seg: Segment, timings: dict, staged: bool = False) -> None:
        """Stage the segment (unless apply() did, first thing), then merge it, in one round trip."""
        clock = time.perf_counter
        started = clock()
        if not staged:
            self._copy_stage(cur, seg, first=False)
        copied = clock()
        scopes = sorted({scope[:5] for scope in seg.scopes})
        statements = [_values(cur, sql.ENSURE_SCOPES, None, scopes)]
        refs = [(ref, *scope) for scope, ref in seg.scopes.items()]
        statements.append(_values(cur, sql.FILL_STAGE_SCOPES, sql.FILL_STAGE_SCOPES_TEMPLATE,
                                  refs))
        statements.append(sql.ANALYZE_STAGE_SCOPES)
        statements.append(sql.INSERT_HISTORY)
        self._merge(cur, statements, seg.max_gen)
        done = clock()
        for name, took in (("copy", copied - started), ("merge", done - copied)):
            timings[name] = timings.get(name, 0.0) + took

    def _merge(self, cur, statements: list, max_gen: int) -> None:
        """Run ``statements``, then merge the stage into route_current, generation by generation.

        Strategy: first occurrences (generation 0) are tried as a plain
        INSERT in a savepoint: on a table load every key is new, and the
        upsert's speculative insertion would cost a third more.  A key that
        exists fails the attempt (unique violation on the key): the
        savepoint is rolled back, the upsert runs instead, and the attempt is
        skipped for the next 1, 2, 4 ... 64 segments, so that a steady flow
        of updates to known routes pays for a failed attempt rarely.  A
        failure costs what the INSERT did before it met the known key, plus
        dead rows for VACUUM.
        """
        fresh = self._fresh_skip == 0
        upserts = [sql.UPSERT_STATE % gen for gen in range(1 if fresh else 0, max_gen + 1)]
        if not fresh:
            self._fresh_skip -= 1
            cur.execute(";\n".join(statements + upserts))
            return
        self.fresh_attempts += 1
        try:
            cur.execute(";\n".join(statements + [sql.FRESH_SAVEPOINT, sql.INSERT_STATE % 0,
                                                   sql.FRESH_RELEASE] + upserts))
        except UniqueViolation as exc:
            if exc.diag.constraint_name != sql.STATE_KEY:
                raise
            cur.execute(";\n".join([sql.FRESH_ROLLBACK, sql.UPSERT_STATE % 0] + upserts))
            self.fresh_failures += 1
            self._fresh_skip = self._fresh_backoff
            self._fresh_backoff = min(FRESH_BACKOFF_MAX, self._fresh_backoff * 2)
        else:
            self._fresh_backoff = 1

    def _op(self, cur, op: Op, result: dict) -> None:
        params = dict(op.data, router_ip=op.router_ip, t=op.time)
        kind = op.kind
        if kind == "stats":
            rows = [(op.time, op.router_ip, params["peer_type"], params["peer_rd"],
                     params["peer_ip"], params["peer_asn"], *row) for row in params["rows"]]
            if rows:
                execute_values(cur, sql.STATS, rows, template=sql.STATS_TEMPLATE)
        elif kind == "peer_up":
            cur.execute(sql.PEER_UP, params)
            details = {"local_ip": params["local_ip"], "local_port": params["local_port"],
                       "remote_port": params["remote_port"], "hold_time": params["hold_time"]}
            cur.execute(sql.PEER_EVENT, dict(params, event="peer_up", reason_code=None,
                                             details=json.dumps(details)))
        elif kind == "peer_down":
            cur.execute(sql.WITHDRAW_PEER, params)
            withdrawn = cur.fetchone()[0]
            result["withdrawn_by_peer_down"] += withdrawn
            cur.execute(sql.PEER_DOWN, params)
            details = dict(params["details"], routes_withdrawn=withdrawn)
            cur.execute(sql.PEER_EVENT, dict(params, event="peer_down",
                                             details=json.dumps(details)))
        elif kind == "end_of_rib":
            cur.execute(sql.SWEEP_STALE, params)
            result["swept"] += cur.fetchone()[0]
        elif kind == "connect":
            cur.execute(sql.ROUTER_CONNECTED, params)
        elif kind == "disconnect":
            cur.execute(sql.ROUTER_DISCONNECTED, params)
            cur.execute(sql.MARK_STALE, params)
            result["stale_scopes"] += cur.rowcount
        elif kind == "initiation":
            cur.execute(sql.INITIATION, params)
        elif kind == "termination":
            cur.execute(sql.TERMINATION, params)
        elif kind == "decode_failure":
            cur.execute(sql.DECODE_FAILURE, params)
        else:  # pragma: no cover - rows.py and this module agree on the kinds
            raise ValueError(f"unknown operation {kind!r}")

    def forget(self) -> None:
        """Drop what is cached about the database (partitions); it is read again."""
        self._partition_days = None
        self._native_partitions = None

    # -- start and maintenance ---------------------------------------------

    def connected_routers(self) -> list:
        """Routers a previous run left marked connected (their sessions are gone)."""
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(sql.CONNECTED_ROUTERS)
                routers = [row[0] for row in cur.fetchall()]
            conn.commit()
        return routers

    def _route_history_native(self, cur) -> bool:
        if self._native_partitions is None:
            cur.execute(sql.ROUTE_HISTORY_KIND)
            row = cur.fetchone()
            if row is None:
                raise RuntimeError("route_history is missing: run `pybmpmon migrate` first")
            self._native_partitions = row[0] == "p"
        return self._native_partitions

    def _load_partitions(self, cur) -> set:
        cur.execute(sql.LIST_PARTITIONS)
        days = set()
        for (name,) in cur.fetchall():
            if name.startswith(PARTITION_PREFIX):
                try:
                    day = dt.datetime.strptime(name[len(PARTITION_PREFIX):], "%Y%m%d")
                except ValueError:
                    continue
                days.add(int(day.replace(tzinfo=dt.timezone.utc).timestamp() // 86400))
        return days

    def ensure_partitions(self, days) -> None:
        """Daily partitions of route_history for ``days`` (epoch day numbers)."""
        if self._partition_days is not None and self._native_partitions is False:
            return
        if self._partition_days is not None and all(d in self._partition_days for d in days):
            return
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                if not self._route_history_native(cur):
                    self._partition_days = set()
                    conn.commit()
                    return
                cur.execute(sql.PARTITION_LOCK, (PARTITION_LOCK_KEY,))
                existing = self._load_partitions(cur)
                for day in sorted(set(days) - existing):
                    self._create_partition(cur, day)
                    existing.add(day)
            conn.commit()
        self._partition_days = existing

    @staticmethod
    def _create_partition(cur, day: int) -> None:
        start = dt.datetime.fromtimestamp(day * 86400, dt.timezone.utc)
        end = start + dt.timedelta(days=1)
        name = f"{PARTITION_PREFIX}{start:%Y%m%d}"
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF route_history "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        log.info("route_partition_created", extra={"partition": name})

    def maintain(self, now: Optional[float] = None) -> dict:
        """Partitions ahead, retention, pruning of the batch ledger and attribute sets."""
        now = time.time() if now is None else now
        today = int(now // 86400)
        self.ensure_partitions(range(today - 1, today + DAYS_AHEAD + 1))
        dropped = []
        pruned = 0
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(sql.PRUNE_BATCHES)
                if self.retention is not None and self.retention.total_seconds() > 0:
                    cutoff = now - self.retention.total_seconds()
                    if self._route_history_native(cur):
                        dropped = self._drop_partitions(cur, cutoff)
                    else:
                        cur.execute("SELECT drop_chunks('route_history', older_than => "
                                    "to_timestamp(%s))", (cutoff,))
                        dropped = [row[0] for row in cur.fetchall()]
                    for table in ("stats_reports", "peer_events"):
                        cur.execute(f"DELETE FROM {table} WHERE time < to_timestamp(%s)",
                                    (cutoff,))
                    if (self._attrs_pruned_at is None
                            or now - self._attrs_pruned_at >= ATTRS_PRUNE_INTERVAL):
                        cur.execute(sql.PRUNE_ATTRS, {"before": cutoff - ATTRS_GRACE})
                        pruned = cur.rowcount
                        self._attrs_pruned_at = now
            conn.commit()
        if dropped:
            log.info("route_partitions_dropped", extra={"partitions": dropped})
        if pruned:
            log.info("route_attrs_pruned", extra={"count": pruned})
        return {"dropped": dropped, "attrs_pruned": pruned}

    def _drop_partitions(self, cur, cutoff: float) -> list:
        """Drop the daily partitions that end at or before ``cutoff``."""
        cur.execute(sql.PARTITION_LOCK, (PARTITION_LOCK_KEY,))
        dropped = []
        for day in sorted(self._load_partitions(cur)):
            if (day + 1) * 86400 <= cutoff:
                start = dt.datetime.fromtimestamp(day * 86400, dt.timezone.utc)
                name = f"{PARTITION_PREFIX}{start:%Y%m%d}"
                cur.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
        if self._partition_days is not None:
            self._partition_days -= {d for d in self._partition_days if (d + 1) * 86400 <= cutoff}
        return dropped
