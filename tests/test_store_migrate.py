"""Schema migrations: applied once, re-runnable, safe when started concurrently."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from pybmpmon.store import current_version, latest_version, migrate
from pybmpmon.store.migrate import available_migrations

PUBLIC_TABLES = {
    "routers": {"router_ip", "sys_name", "sys_descr", "first_seen", "last_seen", "connected"},
    "bgp_peers": {"router_ip", "peer_type", "peer_rd", "peer_ip", "peer_asn", "peer_bgp_id",
                  "state", "local_ip", "local_port", "remote_port", "capabilities", "last_up",
                  "last_down", "last_down_reason"},
    "peer_events": {"time", "router_ip", "peer_ip", "peer_asn", "event", "reason_code",
                    "details"},
    "stats_reports": {"time", "router_ip", "peer_ip", "stat_type", "stat_name", "afi_safi",
                      "value"},
    "route_updates": {"time", "router_ip", "peer_ip", "peer_asn", "rib", "afi_safi", "prefix",
                      "path_id", "rd", "is_withdrawn", "next_hop", "origin", "as_path",
                      "origin_as", "med", "local_pref", "communities", "large_communities",
                      "ext_communities", "evpn_route_type", "evpn_esi", "evpn_ethernet_tag",
                      "evpn_mac", "evpn_ip", "evpn_gateway"},
    "current_routes": {"first_seen", "last_seen", "last_change", "is_withdrawn", "stale",
                       "learn_count", "withdraw_count", "prefix", "as_path"},
    "unstable_prefixes": {"prefix", "updates", "announces", "withdraws"},
}


def columns(dsn, table):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = %s", (table,))
        return dict(cur.fetchall())


def test_migrations_are_numbered_files():
    migrations = available_migrations()
    assert migrations and migrations[0].version == 1
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert latest_version() == migrations[-1].version


def test_migrate_twice(empty_db_dsn):
    assert migrate(empty_db_dsn) == latest_version()
    assert migrate(empty_db_dsn) == latest_version()
    with psycopg2.connect(empty_db_dsn) as conn:
        assert current_version(conn) == latest_version()
        with conn.cursor() as cur:
            cur.execute("SELECT version, name FROM schema_version ORDER BY version")
            rows = cur.fetchall()
    assert [v for v, _ in rows] == [m.version for m in available_migrations()]


def test_public_interface(db_dsn):
    for table, expected in PUBLIC_TABLES.items():
        got = columns(db_dsn, table)
        assert expected <= set(got), (table, expected - set(got))
    route_updates = columns(db_dsn, "route_updates")
    state = columns(db_dsn, "route_state")
    for name in ("peer_asn", "origin_as", "med", "local_pref", "path_id"):
        assert route_updates[name] == "bigint" and state[name] == "bigint"
    assert route_updates["as_path"] == "ARRAY" and route_updates["prefix"] == "cidr"
    assert columns(db_dsn, "bgp_peers")["peer_asn"] == "bigint"
    # Every route_updates column is in route_state under the same name, except
    # those of the event itself (its times).
    assert set(route_updates) - {"time", "received_at", "cause"} <= set(state)


def test_concurrent_migrations(empty_db_dsn):
    results, errors = [], []

    def run():
        try:
            results.append(migrate(empty_db_dsn))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert results == [latest_version()] * 4
    with psycopg2.connect(empty_db_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_version")
        assert cur.fetchone()[0] == len(available_migrations())


def test_failed_migration_leaves_nothing(empty_db_dsn, monkeypatch):
    import importlib

    module = importlib.import_module("pybmpmon.store.migrate")

    good = available_migrations()
    broken = good + [module.Migration(good[-1].version + 1, "broken",
                                      "CREATE TABLE half_done (x int); SELECT no_such_thing;")]
    monkeypatch.setattr(module, "available_migrations", lambda: broken)
    with pytest.raises(psycopg2.Error):
        migrate(empty_db_dsn)
    with psycopg2.connect(empty_db_dsn) as conn, conn.cursor() as cur:
        assert current_version(conn) == good[-1].version
        cur.execute("SELECT to_regclass('half_done')")
        assert cur.fetchone()[0] is None
