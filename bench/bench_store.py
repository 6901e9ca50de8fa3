"""Store benchmark: a synthetic full table through the writer into PostgreSQL.

`make bench-store` runs it.  Steps:

1. The synthetic full table of bench/synth.py (1M IPv4 + 200k IPv6 routes by
   default; --small for 50k) is decoded with RouterSession, untimed.
2. **Writer**: the decoded events go through :class:`pybmpmon.store.Writer`
   (history rows in route_updates and current state in route_state, with
   every index), timed from the first submit to the last commit.  Then the
   **reload**: the router's session ends and the same table comes again (a
   router restart), so every key is known and the upsert does the work.
3. **Raw COPY**: the same history rows, as COPY text prepared beforehand, are
   copied into an index-free table with route_updates' columns in the same
   database, in batches of the same size: the database's own ceiling.
4. The issue's queries on the loaded database: current routes of one prefix,
   routes covering an address, the history of one prefix, unstable_prefixes
   (after some churn), each timed (target: under 100 ms).

The database is a private server under var/bench/pg (started and stopped
here), or the one named with --dsn (its tables are dropped and re-created:
give it a scratch database).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import synth  # noqa: E402

SMALL = (40_000, 10_000)


def log(text: str) -> None:
    print(text, flush=True)


def decode_stream(v4: int, v6: int) -> tuple:
    """(list of event chunks, route count) of the synthetic table."""
    from pybmpmon.bmp.model import RouteMonitoring
    from pybmpmon.session import RouterSession

    path, counts = synth.cached_stream(v4, v6)
    session = RouterSession()
    chunks = []
    routes = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(65536)
            if not data:
                break
            events = session.feed(data)
            for event in events:
                if type(event) is RouteMonitoring:
                    routes += sum(len(rs.nlri) for rs in event.update.announced)
            chunks.append(events)
    if routes != counts["routes"]:
        raise SystemExit(f"decoded {routes} routes, the stream holds {counts['routes']}")
    return chunks, routes


def history_lines(chunks, batch_size: int) -> list:
    """The history rows of the table as COPY text of route_updates' wide columns, in batches.

    Wide: the attribute set is written out in every row (what a collector
    without route_attrs would store), so the raw COPY rate is that of the
    rows users read from route_updates.
    """
    import datetime as dt

    from pybmpmon.store.rows import NULL, BatchBuilder

    builder = BatchBuilder()
    batches = []
    current = []
    time_text = {}
    attr_sets = {NULL: "\t".join([NULL] * 13)}
    for events in chunks:
        builder.add_events("192.0.2.254", events, 1_700_000_000.0)
        batch = builder.take()
        builder.confirm(batch)
        for part in batch.parts:
            for line in getattr(part, "attrs", ()):
                digest, fields = line[:-1].split("\t", 1)
                attr_sets[digest] = fields
            refs = {str(ref): scope for scope, ref in getattr(part, "scopes", {}).items()}
            for line in getattr(part, "lines", ()):
                f = line[:-1].split("\t")
                # stage: gen, time, received, sref, nlri, prefix, path_id, rd, withdrawn,
                # attr_hash, labels, evpn...; sref stands for (router, peer, rd, rib,
                # family, asn).
                times = []
                for stamp in f[1:3]:
                    text = time_text.get(stamp)
                    if text is None:
                        text = dt.datetime.fromtimestamp(float(stamp),
                                                         dt.timezone.utc).isoformat()
                        time_text[stamp] = text
                    times.append(text)
                router, peer, rd, rib, family, asn = refs[f[3]]
                row = [*times, router, peer, rd, str(asn), rib, family, *f[4:9],
                       attr_sets[f[9]], *f[10:]]
                current.append("\t".join(row) + "\n")
                if len(current) >= batch_size:
                    batches.append(current)
                    current = []
    if current:
        batches.append(current)
    return batches


RAW_COLUMNS = (
    "time, received_at, router_ip, peer_ip, peer_rd, peer_asn, rib, afi_safi, nlri, prefix, "
    "path_id, rd, is_withdrawn, next_hop, origin, as_path, origin_as, med, local_pref, "
    "communities, large_communities, ext_communities, atomic_aggregate, aggregator, originator_id, "
    "cluster_list, labels, evpn_route_type, evpn_esi, evpn_ethernet_tag, evpn_mac, evpn_ip, "
    "evpn_gateway"
)


def raw_copy(dsn: str, batches: list) -> tuple:
    """(rows, seconds, WAL bytes) of COPYing the history rows into an index-free table."""
    import psycopg2

    from pybmpmon.store.database import _LinesReader

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_raw_copy")
    cur.execute("CREATE TABLE bench_raw_copy (LIKE route_updates INCLUDING DEFAULTS)")
    conn.commit()
    cur.execute("SELECT pg_current_wal_lsn()::text")
    wal0 = cur.fetchone()[0]
    rows = 0
    started = time.perf_counter()
    for lines in batches:
        cur.copy_expert(f"COPY bench_raw_copy ({RAW_COLUMNS}) FROM STDIN",
                        _LinesReader(lines), size=1 << 20)
        conn.commit()
        rows += len(lines)
    took = time.perf_counter() - started
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (wal0,))
    wal = int(cur.fetchone()[0])
    cur.execute("SELECT count(*) FROM bench_raw_copy")
    assert cur.fetchone()[0] == rows
    cur.execute("DROP TABLE bench_raw_copy")
    conn.commit()
    conn.close()
    return rows, took, wal


def run_writer(dsn: str, chunks, batch_size: int, reload: bool = False) -> tuple:
    """(routes, seconds, writer stats) of the whole table through the writer.

    The stats include ``wal_bytes``: WAL the server wrote meanwhile, and
    ``fresh``: (attempts, failures) of the plain INSERT of new keys.
    ``reload``: the router's session ends first and the table comes again,
    as after a router restart: every key is known, the upsert does the work.
    """
    import gevent
    import psycopg2

    from pybmpmon.service import tune_interpreter
    from pybmpmon.store.writer import Writer

    tune_interpreter()  # as `pybmpmon serve` runs the writer
    writer = Writer(dsn, batch_size=batch_size, batch_timeout=1.0, max_pending=32)
    totals: dict = {}

    def timed(store):
        apply = store.apply

        def timed_apply(batch, *hooks):
            result = apply(batch, *hooks)
            for name, took in store.timings.items():
                totals[name] = totals.get(name, 0.0) + took
            return result
        return timed_apply

    for store in writer.stores:
        store.apply = timed(store)
    writer.start()
    gevent.sleep(0.5)  # start-up maintenance out of the measurement
    writer.flush(timeout=60)
    probe = psycopg2.connect(dsn)
    probe.autocommit = True
    wal_cursor = probe.cursor()
    wal_cursor.execute("SELECT pg_current_wal_lsn()::text")
    wal0 = wal_cursor.fetchone()[0]
    started = time.perf_counter()
    if reload:
        writer.router_disconnected("192.0.2.254")
    writer.router_connected("192.0.2.254")
    for events in chunks:
        writer.submit("192.0.2.254", events)
    assert writer.flush(timeout=3600)
    took = time.perf_counter() - started
    wal_cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (wal0,))
    stats = dict(writer.stats, wal_bytes=int(wal_cursor.fetchone()[0]))
    probe.close()
    stats["database_s"] = totals
    stats["fresh"] = (sum(store.fresh_attempts for store in writer.stores),
                      sum(store.fresh_failures for store in writer.stores))
    writer.stop(timeout=60)
    return stats["routes"], took, stats


def churn(dsn: str, chunks) -> None:
    """Flap a thousand routes a few times (input for unstable_prefixes)."""
    from pybmpmon.bgp.model import EMPTY_ATTRIBUTES, Update
    from pybmpmon.bmp.model import RouteMonitoring
    from pybmpmon.store.writer import Writer

    picked = []
    for events in chunks:
        for event in events:
            if type(event) is RouteMonitoring and event.update.announced:
                picked.append(event)
                if len(picked) >= 1000:
                    break
        if len(picked) >= 1000:
            break
    writer = Writer(dsn, batch_size=5000, batch_timeout=0.5, reset_connected=False)
    writer.start()
    for _ in range(3):
        withdrawals = [RouteMonitoring(e.peer, Update(EMPTY_ATTRIBUTES, (), e.update.announced))
                       for e in picked]
        writer.submit("192.0.2.254", withdrawals)
        writer.submit("192.0.2.254", picked)
    writer.flush(timeout=300)
    writer.stop(timeout=60)


def time_queries(dsn: str) -> list:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("ANALYZE route_current, route_history, route_attrs, route_scopes")
    cur.execute("SELECT prefix FROM route_state WHERE afi_safi = 'ipv4_unicast' "
                "AND masklen(prefix) = 24 ORDER BY nlri LIMIT 1 OFFSET 12345")
    prefix = str(cur.fetchone()[0])
    address = prefix.split("/")[0][:-1] + "77"
    cur.execute("SELECT prefix FROM route_state WHERE afi_safi = 'ipv6_unicast' "
                "ORDER BY nlri LIMIT 1 OFFSET 4321")
    prefix6 = str(cur.fetchone()[0])
    queries = [
        ("current routes of one prefix",
         "SELECT * FROM current_routes WHERE prefix = %s", (prefix,)),
        ("current routes of one IPv6 prefix",
         "SELECT * FROM current_routes WHERE prefix = %s", (prefix6,)),
        ("routes covering an address", "SELECT * FROM routes_covering(%s)", (address,)),
        ("history of one prefix", "SELECT * FROM prefix_history(%s)", (prefix,)),
        ("unstable_prefixes", "SELECT * FROM unstable_prefixes", None),
    ]
    results = []
    for label, sql, params in queries:
        cur.execute(sql, params)  # warm
        best = None
        for _ in range(5):
            started = time.perf_counter()
            cur.execute(sql, params)
            rows = cur.fetchall()
            took = (time.perf_counter() - started) * 1000
            best = took if best is None else min(best, took)
        results.append((label, best, len(rows)))
    conn.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="50k routes instead of 1.2M")
    parser.add_argument("--v4", type=int, default=1_000_000)
    parser.add_argument("--v6", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="routes per batch (default: BATCH_SIZE's default, as serve uses)")
    parser.add_argument("--dsn", help="a scratch database to use instead of a private server")
    parser.add_argument("--keep", action="store_true", help="leave the private server's data")
    parser.add_argument("--shared-buffers", default="2GB",
                        help="shared_buffers of the private server (default 2GB)")
    args = parser.parse_args(argv)
    v4, v6 = SMALL if args.small else (args.v4, args.v6)
    if args.batch_size is None:
        from pybmpmon.config import Settings

        args.batch_size = Settings().batch_size

    from pybmpmon.store.migrate import migrate

    server = None
    dsn = args.dsn
    if dsn is None:
        from pybmpmon.store.localpg import LocalPostgres

        base = ROOT / "var" / "bench" / "pg"
        if (base / "data" / "PG_VERSION").exists():  # left by --keep: stop it first
            LocalPostgres(base).stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
        # Sized for the working set of a full table (route_state and its
        # indexes are ~1 GB); the raw COPY does not depend on it.
        server = LocalPostgres(base, settings={"shared_buffers": args.shared_buffers})
        log(f"private PostgreSQL under {base} ({server.bin_dir})")
        server.start()
        server.wait_ready()
        import psycopg2

        admin = psycopg2.connect(server.dsn())
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench")
        admin.close()
        dsn = server.dsn("bench")
    try:
        import psycopg2

        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        migrate(dsn)
        log(f"PostgreSQL {version}; decoding the synthetic table ({v4} IPv4 + {v6} IPv6) ...")
        chunks, routes = decode_stream(v4, v6)
        log(f"decoded {routes} routes in {len(chunks)} submissions")
        batches = history_lines(chunks, args.batch_size)

        rows, raw_before, raw_wal = raw_copy(dsn, batches)
        log(f"raw COPY (before): {rows / raw_before:,.0f} rows/s ({raw_before:.1f} s)")
        written, took, stats = run_writer(dsn, chunks, args.batch_size)
        log(f"writer: {written / took:,.0f} routes/s ({took:.1f} s, {stats['batches']} batches: "
            f"{stats['overlapped']} merged alongside the one before, {stats['pipelined']} "
            f"after it, {stats['superseded']} rolled back and redone)")
        log("  database time per step: " + ", ".join(
            f"{name} {secs:.1f} s" for name, secs in stats["database_s"].items()))
        reloaded, reload_took, reload_stats = run_writer(dsn, chunks, args.batch_size, reload=True)
        log(f"writer, reload: {reloaded / reload_took:,.0f} routes/s ({reload_took:.1f} s; plain "
            f"INSERT of new keys tried {reload_stats['fresh'][0]} times, "
            f"failed {reload_stats['fresh'][1]})")
        rows, raw_after, _ = raw_copy(dsn, batches)
        log(f"raw COPY (after): {rows / raw_after:,.0f} rows/s ({raw_after:.1f} s)")
        raw_rate = 2 * rows / (raw_before + raw_after)
        writer_rate = written / took
        ratio = writer_rate / raw_rate

        churn(dsn, chunks)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM route_state")
            state_rows = cur.fetchone()[0]
            cur.execute("SELECT pg_size_pretty(pg_total_relation_size('route_current')), "
                        "pg_size_pretty(pg_total_relation_size('route_attrs')), "
                        "(SELECT count(*) FROM route_attrs), "
                        "pg_size_pretty(sum(pg_total_relation_size(inhrelid))) "
                        "FROM pg_inherits WHERE inhparent = 'route_history'::regclass")
            state_size, attrs_size, attr_sets, history_size = cur.fetchone()
        queries = time_queries(dsn)

        log("")
        log(f"routes                 {routes:>12,}")
        log(f"raw COPY               {raw_rate:>12,.0f} rows/s   (history rows, no index)")
        log(f"writer                 {writer_rate:>12,.0f} routes/s (history + current state)")
        log(f"writer / raw COPY      {ratio:>12.0%}          (target >= 50%)")
        log(f"writer, reload         {reloaded / reload_took:>12,.0f} routes/s (the same table "
            f"again after a reconnect: every key known)")
        log(f"WAL per route          {stats['wal_bytes'] / written:>12,.0f} bytes    "
            f"(raw COPY: {raw_wal / rows:,.0f} bytes per row)")
        log(f"route_state            {state_rows:>12,} rows, {state_size}; "
            f"route_updates {history_size}; route_attrs {attr_sets:,} sets, {attrs_size}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log(f"peak RSS               {peak:>12,.0f} MB")
        for label, ms, count in queries:
            flag = "ok" if ms < 100 else "SLOW"
            log(f"query: {label:<34} {ms:8.1f} ms  {count:>5} rows  {flag}")
        return 0
    finally:
        if server is not None:
            server.stop()
            if not args.keep:
                shutil.rmtree(server.base_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
