"""The collector as operators run it: ``pybmpmon serve``, ``migrate`` and ``check``.

Start-up order matters: gevent's monkey-patching first (the CLI does it before
importing this module), then configuration, logging, Sentry, the database
(a private PostgreSQL under ./var when no database is configured), the
migrations, the writer and finally the listener.

Shutdown (SIGTERM, SIGINT): the signal handler only records the signal; the
main greenlet then stops accepting and reading, lets every router handler
hand over what it already read, flushes the writer, closes the pool and
exits 0, all within SHUTDOWN_TIMEOUT.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
import sys
import time
from pathlib import Path

import gevent
from gevent.event import Event

from pybmpmon import __version__
from pybmpmon.config import Settings
from pybmpmon.logsetup import setup_logging
from pybmpmon.sentry import capture_route_processing_error, init_sentry, shutdown_sentry

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path("var") / "postgres"
EMBEDDED_DB = "pybmpmon"


# How long the hub's thread may hold the GIL while another thread waits for
# it (CPython's default is 5 ms).  The writer's database calls run on a
# native thread that needs the GIL back after every round trip to
# PostgreSQL; while the hub decodes and builds the next batch, each hand-over
# would cost up to the whole interval, and the server sat idle meanwhile.
# make bench, full table: 24.6k routes/s at 5 ms, 29.0-29.4k at 0.5 ms.
SWITCH_INTERVAL = 0.0005


def tune_interpreter() -> None:
    """Settings of the interpreter for a collector: garbage collection, GIL hand-over.

    The young generation is collected less often: decoding a full table
    creates millions of short-lived tuples; with the default threshold (700)
    the collector runs every few UPDATEs and scans the long-lived caches again
    and again.  The GIL is handed to the database thread sooner (see
    SWITCH_INTERVAL).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(SWITCH_INTERVAL)


def database_settings(settings: Settings) -> tuple:
    """(settings pointing at the database, the private server or None).

    Without DB_HOST or DATABASE_URL, a private PostgreSQL under ./var is
    started (kept across runs) and a database created in it.
    """
    if not settings.embedded_db:
        return settings, None
    from pybmpmon.store.localpg import LocalPostgres

    server = LocalPostgres(EMBEDDED_DIR)
    server.start()
    server.wait_ready()
    _create_database(server.dsn(), EMBEDDED_DB)
    embedded = dataclasses.replace(
        settings, db_host="127.0.0.1", db_port=server.port, db_user=server.user, db_name=EMBEDDED_DB
    )
    log.info(
        "embedded_postgres_ready",
        extra={
            "data_dir": str(server.data_dir),
            "port": server.port,
            "psql": f"psql -h 127.0.0.1 -p {server.port} -U {server.user} {EMBEDDED_DB}",
        },
    )
    return embedded, server


def _create_database(dsn: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def run_migrate(settings: Settings) -> int:
    from pybmpmon.store.migrate import migrate

    settings, _server = database_settings(settings)
    version = migrate(settings.dsn)
    log.info("schema_migrated", extra={"schema_version": version})
    return 0


def run_check(settings: Settings) -> int:
    """Configuration, database reachability, schema version; 0 when ready to serve."""
    import psycopg2

    from pybmpmon.store.migrate import current_version, latest_version

    if settings.embedded_db:
        print("database: private PostgreSQL under ./var (started by serve)")
        return 0
    print(f"configuration: ok ({settings.db_display})")
    try:
        conn = psycopg2.connect(settings.dsn, connect_timeout=5)
    except psycopg2.OperationalError as error:
        print(f"database: unreachable: {str(error).strip()}")
        return 1
    try:
        version = current_version(conn)
    finally:
        conn.close()
    latest = latest_version()
    print(f"database: reachable; schema version {version} of {latest}")
    if version < latest:
        print("schema: behind; run `pybmpmon migrate` (serve also migrates at start)")
        return 1
    return 0


def serve(settings: Settings) -> int:
    """Run the collector until SIGTERM or SIGINT; the exit status."""
    from pybmpmon.collector import Collector
    from pybmpmon.store.migrate import migrate
    from pybmpmon.store.writer import Writer

    log.info("pybmpmon_starting", extra={"version": __version__, **settings.log_fields()})
    tune_interpreter()
    settings, server = database_settings(settings)
    migrate(settings.dsn)

    stop = Event()
    received = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_signal, signum)

    writer = Writer(
        settings.dsn,
        batch_size=settings.batch_size,
        batch_timeout=settings.batch_timeout,
        max_pending=settings.queue_size,
        pool_size=settings.db_pool_size,
        retention=settings.route_retention,
        on_error=lambda error, routes: capture_route_processing_error(None, error, routes),
    )
    writer.start()
    collector = Collector(settings, writer)
    collector.start()
    host, port = collector.address[:2]
    log.info(
        "pybmpmon_listening", extra={"host": host, "port": port, "database": settings.db_display}
    )

    stop.wait()
    started = time.monotonic()
    log.info(
        "shutdown_initiated",
        extra={"signal": signal.Signals(received[0]).name if received else None},
    )
    timeout = settings.shutdown_timeout
    collector.stop(timeout=timeout * 0.3)
    flushed = writer.stop(timeout=max(timeout - (time.monotonic() - started) - 1, 1))
    log.info(
        "pybmpmon_stopped",
        extra={"flushed": bool(flushed), "shutdown_seconds": round(time.monotonic() - started, 3)},
    )
    shutdown_sentry(timeout=1.0)
    if server is not None:
        server.stop()
    return 0 if flushed else 1


def start_logging(settings: Settings) -> None:
    """Logging first, then Sentry (which logs through it)."""
    setup_logging(settings.log_level, settings.log_format)
    init_sentry(settings)
