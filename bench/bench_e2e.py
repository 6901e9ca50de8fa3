"""End-to-end benchmark (SPEC §13): a full table through TCP into a running collector.

`make bench` runs it.  Steps:

1. A private PostgreSQL under var/bench/e2e-pg with the settings a production
   server would have (durable: fsync and synchronous_commit on; not the
   test suite's fast=True), or the database named with --dsn.
2. ``pybmpmon serve`` as a subprocess with its default batching settings,
   listening on 127.0.0.1.
3. **Full table**: bench/synth.py's table (1M IPv4 + 200k IPv6 routes by
   default) is sent over one TCP connection, as fast as the collector reads it.
   Timed from the first byte to the last route committed: batches commit in
   stream order, so the moment the table's last route is in both route_updates
   (history) and route_state (current state) ends the measurement; the full
   row counts are then checked.  Reported: routes/s, CPU seconds of the serve
   process (utime+stime from /proc) and of PostgreSQL, the collector's peak RSS
   (VmHWM), the parse-only rate (bench_parse.py's decoder over the same stream)
   and the raw COPY rate of the same history rows into an index-free table of
   the same database (bench_store.py's method), with the ratio.
4. **Many routers** (``--routers 20 --routes-per-router 50000``): that many
   routers (source addresses 127.0.0.101, ..., each a process of its own:
   bench/sender.py) connect, then send a table each at the same moment;
   reported per router: when its last byte was read and when its last
   route was committed, and whether any router was starved: while all were
   sending, one read less than half as many routes as another.

Targets (issue 4): >= 50,000 routes/s end to end, >= 50% of the raw COPY rate,
collector peak RSS < 150 MB, no router starved.  The machine's load average is
printed: other work on a shared box skews every figure.

Usage: ``python3 bench/bench_e2e.py [--v4 N --v6 N] [--routers 20
--routes-per-router 50000] [--dsn DSN] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import synth  # noqa: E402

DATA_DIR = ROOT / "var" / "bench" / "e2e-pg"
LOG_FILE = ROOT / "var" / "bench" / "e2e-serve.log"
FULL_ROUTER = "127.0.0.99"
TARGETS = {"routes_per_second": 50_000, "copy_ratio": 0.5, "rss_mb": 150, "starvation": 2.0}


def say(text: str = "") -> None:
    print(text, flush=True)


# --- the database ---------------------------------------------------------------------


class Database:
    """A private durable PostgreSQL (or an existing one), with a fresh database."""

    def __init__(self, dsn: str | None, keep: bool):
        self.server = None
        self.keep = keep
        self._conn = None
        if dsn is not None:
            self.dsn = dsn
            self._reset_schema()
            return
        from pybmpmon.store.localpg import LocalPostgres

        shutil.rmtree(DATA_DIR, ignore_errors=True)
        self.server = LocalPostgres(DATA_DIR)  # durable: production settings
        self.server.start()
        self.server.wait_ready()
        self._admin("CREATE DATABASE bench")
        self.dsn = self.server.dsn("bench")

    def _admin(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.server.dsn())
        conn.autocommit = True
        conn.cursor().execute(statement)
        conn.close()

    def _reset_schema(self) -> None:
        import psycopg2

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

    def query(self, sql: str, *params, fetch: bool = True):
        """Rows of ``sql``, on one kept connection: the benchmark polls every 50 ms,
        and a new backend per poll would load the 2-core machine it measures."""
        import psycopg2

        if self._conn is None:
            self._conn = psycopg2.connect(self.dsn)
            self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if fetch else None

    def describe(self) -> str:
        rows = self.query("SELECT current_setting('server_version'), current_setting('fsync'), "
                          "current_setting('synchronous_commit'), "
                          "current_setting('shared_buffers')")
        version, fsync, sync, buffers = rows[0]
        return (f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync}, "
                f"shared_buffers={buffers})")

    def cpu_seconds(self) -> float | None:
        """CPU of the server: its live processes plus the children it reaped."""
        if self.server is None:
            return None
        try:
            postmaster = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        total = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = proc_stat(int(entry))
            except OSError:
                continue
            pid, ppid = int(entry), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def wal_position(self) -> str:
        """The server's current WAL write position (an LSN)."""
        return self.query("SELECT pg_current_wal_lsn()::text")[0][0]

    def wal_bytes_since(self, position: str) -> int:
        return int(self.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                              position)[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.server is not None:
            self.server.stop()
            if not self.keep:
                shutil.rmtree(DATA_DIR, ignore_errors=True)


def proc_stat(pid: int) -> list:
    """/proc/PID/stat fields after the command name (index 0 is the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


# --- the collector ----------------------------------------------------------------------


class Collector:
    """``pybmpmon serve`` as a subprocess; its JSON log kept in var/bench/e2e-serve.log."""

    def __init__(self, dsn: str, settings: dict):
        import psycopg2.extensions

        params = psycopg2.extensions.parse_dsn(dsn)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        names = ("BMP_LISTEN_HOST", "BMP_LISTEN_PORT", "DATABASE_URL", "DB_HOST", "DB_PORT",
                 "DB_USER", "DB_PASSWORD", "DB_NAME", "LOG_FORMAT", "SENTRY_DSN")
        env = {k: v for k, v in os.environ.items() if k not in names}
        env.update({
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "BMP_LISTEN_HOST": "127.0.0.1", "BMP_LISTEN_PORT": str(self.port),
            "DATABASE_URL": f"postgresql://{params.get('user', 'postgres')}@"
                            f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/"
                            f"{params['dbname']}",
            "LOG_FORMAT": "json", **settings})
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(LOG_FILE, "w", encoding="utf-8")
        self.records: list = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "pybmpmon", "serve"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_for("pybmpmon_listening", timeout=120)

    def _read(self) -> None:
        for line in self.proc.stdout:
            text = line.decode("utf-8", "replace")
            self.log.write(text)
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if record.get("level") in ("WARNING", "ERROR", "CRITICAL") or record.get("event") in (
                    "pybmpmon_listening", "route_stats", "router_disconnected",
                    "pybmpmon_stopped"):
                with self.cond:
                    self.records.append(record)
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def find(self, event: str) -> list:
        with self.cond:
            return [r for r in self.records if r.get("event") == event]

    def wait_for(self, event: str, timeout: float, count: int = 1) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.find(event)) < count:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"bench_e2e: no {event} from pybmpmon serve "
                                     f"(see {LOG_FILE})")
                self.cond.wait(0.2)
            return self.find(event)

    def all_read(self, router: str, routes: int, since: float):
        """Seconds from ``since`` (wall clock) to the first route_stats line of ``router``
        counting all its ``routes`` (within the STATS_INTERVAL), or None."""
        for record in self.find("route_stats"):
            if record.get("router") == router and record.get("routes", 0) >= routes:
                return stamp(record) - since
        return None

    def contended_shares(self, routers: list, routes: int):
        """(window seconds, router -> routes read in it): the window runs from the first
        route_stats tick at which every router had sent routes to the first at which
        one of them had all ``routes``.  Who gets how much while all compete is what
        starvation means; completion times also reflect who started first (a router
        that sends before the others fills the idle queue, and FIFO keeps that lead).
        None when the ticks are too few to tell."""
        # One tick logs every router within a few milliseconds, and ticks are
        # STATS_INTERVAL (1 s here) apart: a gap of over 0.3 s starts a new one.
        records = sorted((stamp(r), r["router"], r.get("routes", 0))
                         for r in self.find("route_stats") if r.get("router") in routers)
        ticks: list = []  # [(time, {router: routes read})]
        for at, router, count in records:
            if not ticks or at - ticks[-1][0] > 0.3:
                ticks.append((at, {}))
            ticks[-1][1][router] = count
        complete = [(at, counts) for at, counts in ticks if len(counts) == len(routers)]
        start = next(((at, counts) for at, counts in complete
                      if all(n > 0 for n in counts.values())), None)
        end = next(((at, counts) for at, counts in complete
                    if start is not None and at > start[0]
                    and any(n >= routes for n in counts.values())), None)
        if start is None or end is None or end[0] - start[0] < 2:
            return None
        return end[0] - start[0], {r: end[1][r] - start[1][r] for r in routers}

    def cpu_seconds(self) -> float:
        fields = proc_stat(self.proc.pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        self.log.close()


def stamp(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


class Sender:
    """A router sending the stream: a process of its own (bench/sender.py), as a
    router has its own CPU.

    Threads of this process were unfair senders: they shared one GIL with the
    poller.  Senders connect first and send when told (:meth:`go`), so that
    all start at the same moment.
    """

    def __init__(self, source: str, port: int, path: Path):
        self.source = source
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "sender.py"), source, str(port), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def connected(self) -> bool:
        """Wait until the sender is connected (False: it failed, see :meth:`finish`)."""
        return self.process.stdout.readline().strip() == b"connected"

    def go(self) -> None:
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def release(self) -> None:
        """End the BMP session once the whole stream is read."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def finish(self, timeout: float = 60) -> str | None:
        """Wait for the sender; a description of its failure, or None."""
        self.release()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return f"{self.source}: sender still running after {timeout} s"
        err = self.process.stderr.read() if self.process.stderr is not None else b""
        if self.process.returncode:
            return err.decode(errors="replace").strip() or f"{self.source}: sender failed"
        return None


def wait_disconnected(db: Database, routers: list, timeout: float = 3600) -> float:
    """Seconds until the routers rows say disconnected (their routes marked stale)."""
    started = time.monotonic()
    while db.query("SELECT count(*) FROM routers WHERE connected AND "
                   "router_ip = ANY(%s::inet[])", routers)[0][0]:
        if time.monotonic() - started > timeout:
            raise SystemExit("bench_e2e: routers still marked connected")
        time.sleep(0.1)
    return time.monotonic() - started


def last_prefix(path: Path) -> str:
    """The last route of the stream (from its last UPDATE that announces routes)."""
    from pybmpmon.bmp.model import RouteMonitoring
    from pybmpmon.session import RouterSession

    data = path.read_bytes()
    head = []
    updates = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        kind = data[pos + 5]
        if kind in (3, 4):  # Peer Up, Initiation: the decoding context
            head.append(data[pos:pos + length])
        elif kind == 0:
            updates.append((pos, length))
        pos += length
    session = RouterSession()
    session.feed(b"".join(head))
    for pos, length in reversed(updates):
        for event in session.feed(data[pos:pos + length]):
            if type(event) is RouteMonitoring and event.update.announced:
                return event.update.announced[-1].nlri[-1].key
    raise SystemExit("bench_e2e: the stream announces no route")


def wait_committed(db: Database, prefix: str, routers: list, timeout: float = 3600) -> dict:
    """router -> monotonic time its copy of ``prefix`` was in history and current state."""
    done: dict = {}
    deadline = time.monotonic() + timeout
    # Planned once: planning the two views took most of a poll's 0.6 ms of
    # server CPU, which the benchmark would count as the collector's load.
    db.query("DEALLOCATE ALL; PREPARE committed(cidr) AS "
             "SELECT host(u.router_ip) FROM route_updates u JOIN route_state s "
             "ON s.router_ip = u.router_ip AND s.nlri = u.nlri "
             "WHERE u.prefix = $1 AND s.prefix = $1", fetch=False)
    while len(done) < len(routers):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_e2e: routers {sorted(set(routers) - set(done))} "
                             f"not committed after {timeout} s")
        rows = db.query("EXECUTE committed(%s)", prefix)
        now = time.monotonic()
        for (router,) in rows:
            done.setdefault(router, now)
        time.sleep(0.05)
    return done


# --- the runs --------------------------------------------------------------------------


def full_table(db: Database, args) -> dict:
    path, counts = synth.cached_stream(args.v4, args.v6)
    routes = counts["routes"]
    prefix = last_prefix(path)
    collector = Collector(db.dsn, collector_settings(args))
    sender = None
    errors: list = []
    try:
        db_cpu0 = db.cpu_seconds()
        wal0 = db.wal_position()
        cpu0 = collector.cpu_seconds()
        sender = Sender(FULL_ROUTER, collector.port, path)
        if not sender.connected():
            raise SystemExit(f"bench_e2e: {sender.finish()}")
        started, started_wall = time.monotonic(), time.time()
        sender.go()
        done = wait_committed(db, prefix, [FULL_ROUTER])[FULL_ROUTER]
        took = done - started
        cpu = collector.cpu_seconds() - cpu0
        db_cpu = db.cpu_seconds()
        wal = db.wal_bytes_since(wal0)
        rss = collector.peak_rss_mb()
        time.sleep(float(collector_settings(args)["STATS_INTERVAL"]) + 0.5)
        read_seconds = collector.all_read(FULL_ROUTER, routes, started_wall)
        sender.release()
        disconnect = wait_disconnected(db, [FULL_ROUTER])
        (read,) = collector.wait_for("router_disconnected", timeout=60)
    finally:
        try:
            if sender is not None:
                failure = sender.finish()
                if failure:
                    errors.append(failure)
        finally:
            collector.stop()  # never left running behind a failed benchmark
    history = db.query("SELECT count(*) FROM route_updates WHERE router_ip = %s", FULL_ROUTER)
    state = db.query("SELECT count(*) FROM route_state WHERE router_ip = %s", FULL_ROUTER)
    problems = list(errors)
    if (history[0][0], state[0][0]) != (routes, routes):
        problems.append(f"stored {history[0][0]} history and {state[0][0]} state rows "
                        f"for {routes} routes")
    if read["routes"] != routes:
        problems.append(f"the collector read {read['routes']} routes of {routes}")
    return {"routes": routes, "bytes": counts["bytes"], "seconds": took, "cpu": cpu,
            "db_cpu": None if db_cpu is None else db_cpu - db_cpu0, "rss": rss, "wal": wal,
            "read_seconds": read_seconds, "disconnect": disconnect, "problems": problems,
            "warnings": [r for r in collector.records if r.get("level") != "INFO"]}


def many_routers(db: Database, args) -> dict:
    v4 = args.routes_per_router * 4 // 5
    path, counts = synth.cached_stream(v4, args.routes_per_router - v4)
    prefix = last_prefix(path)
    routers = [f"127.0.0.{101 + i}" for i in range(args.routers)]
    collector = Collector(db.dsn, collector_settings(args))
    senders: list = []
    errors: list = []
    try:
        senders = [Sender(r, collector.port, path) for r in routers]
        for sender in senders:
            if not sender.connected():
                raise SystemExit(f"bench_e2e: {sender.finish()}")
        started, started_wall = time.monotonic(), time.time()
        for sender in senders:
            sender.go()
        done = wait_committed(db, prefix, routers)
        time.sleep(float(collector_settings(args)["STATS_INTERVAL"]) + 0.5)
        read_at = {r: collector.all_read(r, counts["routes"], started_wall) for r in routers}
        shares = collector.contended_shares(routers, counts["routes"])
        for sender in senders:
            sender.release()
        disconnect = wait_disconnected(db, routers)
        collector.wait_for("router_disconnected", timeout=600, count=len(routers))
    finally:
        try:
            for sender in senders:
                failure = sender.finish()
                if failure:
                    errors.append(failure)
        finally:
            collector.stop()  # never left running behind a failed benchmark
    committed = {r: done[r] - started for r in routers}
    stored = dict(db.query("SELECT host(router_ip), count(*) FROM route_updates "
                           "WHERE router_ip = ANY(%s::inet[]) GROUP BY 1", routers))
    problems = list(errors)
    problems += [f"{r}: {stored.get(r, 0)} of {counts['routes']} routes stored"
                 for r in routers if stored.get(r, 0) != counts["routes"]]
    return {"routers": routers, "routes": counts["routes"], "read": read_at,
            "shares": shares, "committed": committed, "disconnect": disconnect,
            "problems": problems}


def collector_settings(args) -> dict:
    settings = {"STATS_INTERVAL": "1"}
    if args.batch_size:
        settings["BATCH_SIZE"] = str(args.batch_size)
    return settings


def parse_only(args) -> float:
    """Routes/s of decoding the same stream in this process (bench_parse.py)."""
    import bench_parse

    session_cls, failure_cls = bench_parse.load_session_class()
    path, _ = synth.cached_stream(args.v4, args.v6)
    started = time.perf_counter()
    found = bench_parse.decode(path, session_cls, failure_cls, 64 * 1024)
    return found["routes"] / (time.perf_counter() - started)


def raw_copy_rate(db: Database, args) -> float:
    """Rows/s of COPYing the table's history rows into an index-free table (bench_store.py),
    in batches of the collector's BATCH_SIZE, each its own transaction as in the writer."""
    import bench_store

    from pybmpmon.config import Settings

    chunks, _ = bench_store.decode_stream(args.v4, args.v6)
    batches = bench_store.history_lines(chunks, args.batch_size or Settings().batch_size)
    del chunks
    rows, took, _wal = bench_store.raw_copy(db.dsn, batches)
    return rows / took


# --- main -------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--v4", type=int, default=1_000_000, help="IPv4 routes of the full table")
    parser.add_argument("--v6", type=int, default=200_000, help="IPv6 routes of the full table")
    parser.add_argument("--routers", type=int, default=20,
                        help="routers of the many-routers run (0: skip it)")
    parser.add_argument("--routes-per-router", type=int, default=50_000)
    parser.add_argument("--skip-full", action="store_true", help="only the many-routers run")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="BATCH_SIZE for the collector (default: its own default)")
    parser.add_argument("--dsn", help="a scratch database instead of a private server "
                        "(its public schema is dropped)")
    parser.add_argument("--keep", action="store_true", help="leave the private server's data")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    say(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"({os.cpu_count()} CPUs)")
    streams = [(args.v4, args.v6)]
    if args.routers:
        v4 = args.routes_per_router * 4 // 5
        streams.append((v4, args.routes_per_router - v4))
    for v4, v6 in streams:
        path = synth.cache_path(v4, v6)
        if not path.exists():
            say(f"generating {path.name} ...")
            subprocess.run([sys.executable, str(HERE / "synth.py"), "--quiet", "--v4", str(v4),
                            "--v6", str(v6)], check=True, stdout=subprocess.DEVNULL)
    db = Database(args.dsn, args.keep)
    failed = False
    try:
        say(db.describe())
        if not args.skip_full:
            say(f"full table: {args.v4} IPv4 + {args.v6} IPv6 routes over one connection ...")
            full = full_table(db, args)
            load_after = os.getloadavg()
            say("parse-only rate ...")
            parse_rate = parse_only(args)
            say("raw COPY of the same history rows ...")
            copy_rate = raw_copy_rate(db, args)
            rate = full["routes"] / full["seconds"]
            ratio = rate / copy_rate
            say()
            say(f"routes                 {full['routes']:>12,}  ({full['bytes'] / 1e6:.1f} MB)")
            say(f"first byte to commit   {full['seconds']:>12.1f} s  (all read after "
                f"{fmt(full['read_seconds'])} s)")
            say(f"end to end             {rate:>12,.0f} routes/s   "
                f"{verdict(rate >= TARGETS['routes_per_second'])} (target >= 50,000)")
            say(f"collector CPU          {full['cpu']:>12.1f} s")
            if full["db_cpu"] is not None:
                say(f"PostgreSQL CPU         {full['db_cpu']:>12.1f} s")
            say(f"WAL written            {full['wal'] / 1e6:>12,.0f} MB  "
                f"({full['wal'] / full['routes']:,.0f} bytes per route)")
            say(f"collector peak RSS     {full['rss']:>12.1f} MB   "
                f"{verdict(full['rss'] < TARGETS['rss_mb'])} (target < 150 MB)")
            say(f"parse only             {parse_rate:>12,.0f} routes/s")
            say(f"raw COPY               {copy_rate:>12,.0f} rows/s")
            say(f"end to end / raw COPY  {ratio:>12.0%}          "
                f"{verdict(ratio >= TARGETS['copy_ratio'])} (target >= 50%)")
            say(f"disconnect             {full['disconnect']:>12.1f} s  (the router's BMP "
                f"session ends: its {full['routes']:,} routes marked stale)")
            say(f"load average           {load_after[0]:.2f} {load_after[1]:.2f} "
                f"{load_after[2]:.2f} (after the full-table run)")
            for record in full["warnings"][:10]:
                say(f"collector {record['level']}: {record.get('event')} "
                    f"{record.get('message', '')}")
            for problem in full["problems"]:
                say(f"PROBLEM: {problem}")
            failed |= bool(full["problems"])
        if args.routers:
            say()
            say(f"{args.routers} routers x {args.routes_per_router} routes at once ...")
            many = many_routers(db, args)
            say(f"{'router':<14} {'all read':>9} {'committed':>10}")
            for router in many["routers"]:
                say(f"{router:<14} {fmt(many['read'][router]):>8}s "
                    f"{many['committed'][router]:>9.1f}s")
            times = sorted(many["committed"].values())
            total = many["routes"] * len(many["routers"])
            say(f"all routers committed after {times[-1]:.1f} s: {total / times[-1]:,.0f} "
                f"routes/s; fastest {times[0]:.1f} s, slowest {times[-1]:.1f} s "
                f"(slowest/fastest {times[-1] / times[0]:.2f})")
            if many["shares"] is None:
                say("starvation: cannot tell, too few route_stats ticks while all routers "
                    "were sending")
            else:
                window, shares = many["shares"]
                spread = max(shares.values()) / max(1, min(shares.values()))
                say(f"while all {len(shares)} were sending ({window:.0f} s): routes read per "
                    f"router {min(shares.values()):,} to {max(shares.values()):,}, "
                    f"most/least {spread:.2f}  {verdict(spread <= TARGETS['starvation'])} "
                    f"({'no router starved' if spread <= TARGETS['starvation'] else 'STARVED'}"
                    f": target <= {TARGETS['starvation']:.1f})")
            say(f"all {len(many['routers'])} routers disconnecting: {many['disconnect']:.1f} s "
                f"until their routes were marked stale")
            load_after = os.getloadavg()
            say(f"load average           {load_after[0]:.2f} {load_after[1]:.2f} "
                f"{load_after[2]:.2f} (after the many-routers run)")
            for problem in many["problems"]:
                say(f"PROBLEM: {problem}")
            failed |= bool(many["problems"])
    finally:
        db.close()
    return 1 if failed else 0


def fmt(seconds) -> str:
    return "?" if seconds is None else f"{seconds:.1f}"


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


if __name__ == "__main__":
    sys.exit(main())
