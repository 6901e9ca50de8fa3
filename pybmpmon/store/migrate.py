"""Versioned schema migrations, shipped inside the package.

Migrations are the files ``pybmpmon/store/migrations/NNNN_name.sql``, applied
in number order, each in its own transaction together with its
``schema_version`` row, so a failing migration leaves nothing half done.  The
whole run holds a PostgreSQL advisory lock: a second instance starting at the
same moment waits, then finds the work done.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import NamedTuple

import psycopg2

log = logging.getLogger(__name__)

# pg_advisory_lock key: "pybmpmon" folded into a bigint, so unrelated
# applications sharing the database do not collide with us.
MIGRATION_LOCK_KEY = 0x7079626D706D6F6E & 0x7FFFFFFFFFFFFFFF

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped in the package, in version order."""
    found = []
    for entry in resources.files("pybmpmon.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2),
                                   entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


def latest_version() -> int:
    migrations = available_migrations()
    return migrations[-1].version if migrations else 0


def current_version(conn) -> int:
    """The schema version of the database behind ``conn`` (0: none applied)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0
        cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        return cur.fetchone()[0]


def migrate(dsn: str) -> int:
    """Bring the database named by ``dsn`` to the newest schema; return its version.

    Safe to run again (nothing to do) and from several processes at once.
    """
    conn = psycopg2.connect(dsn)
    try:
        return migrate_connection(conn)
    finally:
        conn.close()


def migrate_connection(conn) -> int:
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        version = current_version(conn)
        conn.autocommit = False
        for migration in available_migrations():
            if migration.version <= version:
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute(migration.sql)
                    cur.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                                (migration.version, migration.name))
                conn.commit()
            except Exception:
                conn.rollback()
                log.error("schema_migration_failed",
                          extra={"schema_version": migration.version, "migration": migration.name})
                raise
            version = migration.version
            log.info("schema_migrated",
                     extra={"schema_version": version, "migration": migration.name})
        return version
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
