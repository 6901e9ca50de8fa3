"""The documentation and the etc/ files do what they say.

- Every variable the configuration reads is in .env.example and README.rst.
- Every SQL example of README.rst runs, and returns rows, against a database that
  ``pybmpmon serve`` filled from real router captures (../shared/corpus).
- etc/postgresql-setup.sql makes roles with which the collector migrates and
  writes, and operators read but cannot write.
- The FRR and GoBGP router snippets are accepted by bgpd and match what the
  end-to-end tests feed gobgpd; every etc/ path the README names exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from pybmpmon.config import SETTINGS
from routers import FRR_BGPD, REPO, Collector, Db, Processes, have, send_capture, wait_until

README = REPO / "README.rst"
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
# Two routers: GoBGP (pre-policy, post-policy, Loc-RIB; withdrawals and changes)
# and FRR (Peer Downs, statistics, mirroring).
CAPTURES = {"127.0.0.41": "gobgp-all-1", "127.0.0.42": "frr-prepost-1"}
ROUTER = "127.0.0.41"
PSQL_VARIABLE = re.compile(r":'([a-z_]+)'")


def test_every_setting_is_documented():
    env_example = (REPO / ".env.example").read_text()
    readme = README.read_text()
    for setting in SETTINGS:
        assert re.search(rf"^#?{setting.name}=", env_example, re.MULTILINE), setting.name
        assert re.search(rf"^{setting.name}\s", readme, re.MULTILINE), setting.name


def test_quick_start_commands():
    readme = README.read_text()
    assert "    make run\n" in readme and "    make test\n" in readme
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def test_named_files_exist():
    for path in set(re.findall(r"``((?:etc|tests|bench|pybmpmon)/[\w./-]+)``",
                               README.read_text())):
        assert (REPO / path.rstrip("/")).exists(), path


def sql_examples() -> list:
    """The ``.. code-block:: sql`` blocks of README.rst, dedented."""
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: sql":
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            blocks.append("\n".join(line[4:] for line in body).strip())
        else:
            i += 1
    return blocks


def test_readme_has_the_spec_examples():
    """SPEC §1's questions: router R and prefix P now, at time T; flapping
    prefixes; peers down and why."""
    text = "\n".join(sql_examples())
    for needle in ("current_routes", "time <= :'at'", "unstable_prefixes_since",
                   "event = 'peer_down'", "routes_covering", "prefix_history"):
        assert needle in text, needle


@pytest.fixture(scope="module")
def filled_dsn(pg_server, pg_template, tmp_path_factory):
    """A database filled by ``pybmpmon serve`` from two corpus captures."""
    name = f"pybmpmon_docs_{os.getpid()}"
    pg_server.admin(f"DROP DATABASE IF EXISTS {name}",
                    f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    dsn = pg_server.dsn(name)
    procs = Processes()
    try:
        collector = Collector(procs, tmp_path_factory.mktemp("docs"), dsn)
        collector.start()
        for source, capture in CAPTURES.items():
            path = CORPUS / f"{capture}.bmp"
            assert path.is_file(), f"no corpus capture {path}: set PYBMPMON_CORPUS"
            send_capture(path, collector.host, collector.port, source)
        wait_until(lambda: len(collector.events("router_disconnected")) == len(CAPTURES), 30,
                   "the collector to read the captures", context=collector.tail)
        assert collector.stop() == 0
        yield dsn
    finally:
        procs.stop_all()
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def example_values(db: Db) -> dict:
    """Values for the README's psql variables, taken from the data: a prefix router
    ROUTER saw change, an address in it, and the time it was first announced."""
    prefix, = db.rows(
        "SELECT prefix::text FROM current_routes WHERE router_ip = %s AND rib = 'adj_in_pre' "
        "AND afi_safi = 'ipv4_unicast' AND change_count > 0 ORDER BY prefix LIMIT 1",
        (ROUTER,))[0]
    at = db.value("SELECT min(time) FROM route_updates WHERE router_ip = %s AND prefix = %s "
                  "AND NOT is_withdrawn", (ROUTER, prefix))
    address = db.value("SELECT host(%s::cidr + 1)", (prefix,))
    return {"router": ROUTER, "prefix": prefix, "address": address, "at": at}


@pytest.mark.parametrize("number", range(len(sql_examples())))
def test_sql_example_runs(filled_dsn, number):
    sql = sql_examples()[number]
    db = Db(filled_dsn)
    try:
        values = example_values(db)
        names = set(PSQL_VARIABLE.findall(sql))
        assert names <= set(values), names - set(values)
        rows = db.rows(PSQL_VARIABLE.sub(r"%(\1)s", sql), values)
    finally:
        db.close()
    assert rows, f"README example {number + 1} returned nothing:\n{sql}\nwith {values}"


def _psql() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    try:
        from pybmpmon.store.localpg import find_bin_dir

        candidate = find_bin_dir() / "psql"
    except Exception:  # noqa: BLE001 - no server binaries at all
        return None
    return str(candidate) if candidate.exists() else None


def test_postgresql_setup_script(pg_server, tmp_path):
    """Run etc/postgresql-setup.sql twice (it is idempotent), then: the collector's
    role migrates and serves, an operator in pybmpmon_read reads the views but can
    neither write nor create."""
    import psycopg2
    import psycopg2.extensions

    psql = _psql()
    if psql is None:
        pytest.skip("psql is not installed")
    if pg_server.local is None:
        pytest.skip("creates cluster-wide roles: only on the suite's private server")
    dbname = f"pybmpmon_setup_{os.getpid()}"
    admin = psycopg2.extensions.parse_dsn(pg_server.admin_dsn)
    try:
        for _ in range(2):
            result = subprocess.run(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "collector_password=s3cret",
                 "-v", f"dbname={dbname}", "-h", admin["host"], "-p", str(admin["port"]),
                 "-U", admin["user"], "-d", "postgres", "-f",
                 str(REPO / "etc" / "postgresql-setup.sql")],
                capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stdout + result.stderr
        pg_server.admin("CREATE ROLE pybmpmon_test_operator LOGIN IN ROLE pybmpmon_read")
        collector_dsn = psycopg2.extensions.make_dsn(pg_server.dsn(dbname), user="pybmpmon")
        procs = Processes()
        try:
            collector = Collector(procs, tmp_path, collector_dsn)
            collector.start()  # migrates as pybmpmon
            send_capture(CORPUS / "gobgp-pre-policy-small-1.bmp", collector.host,
                         collector.port, "127.0.0.43")
            wait_until(lambda: collector.events("router_disconnected"), 30, "the capture")
            assert collector.stop() == 0
        finally:
            procs.stop_all()
        operator = Db(psycopg2.extensions.make_dsn(collector_dsn, user="pybmpmon_test_operator"))
        try:
            assert operator.value("SELECT count(*) FROM current_routes") > 0
            assert operator.value("SELECT count(*) FROM route_updates") > 0
            assert operator.value("SELECT to_regclass('pybmpmon.routers') IS NOT NULL")
            for statement in ("DELETE FROM routers", "CREATE TABLE mine (x int)",
                              "INSERT INTO routers (router_ip, first_seen, last_seen) "
                              "VALUES ('192.0.2.1', now(), now())"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    operator.rows(statement)
        finally:
            operator.close()
    finally:
        pg_server.admin(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        for role in ("pybmpmon_test_operator", "pybmpmon_read", "pybmpmon"):
            pg_server.admin(f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                            f"'{role}') THEN EXECUTE 'DROP OWNED BY {role}'; "
                            f"EXECUTE 'DROP ROLE {role}'; END IF; END $$")


def test_frr_snippet_is_accepted_by_bgpd(tmp_path):
    if have(FRR_BGPD) is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("FRR is not installed")
        pytest.skip("FRR is not installed")
    conf = tmp_path / "frr.conf"
    conf.write_text((REPO / "etc" / "routers" / "frr.conf").read_text())
    conf.chmod(0o644)
    tmp_path.chmod(0o755)
    result = subprocess.run([FRR_BGPD, "-C", "-f", str(conf), "-M", "bmp", "-Z", "-P", "0",
                             "--vty_socket", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"No such command|Unknown command|error", output, re.IGNORECASE), output


def test_gobgp_snippet_matches_the_tested_configuration():
    """The keys of etc/routers/gobgp.toml are those the GoBGP end-to-end test gives
    gobgpd (routers.GoBgp.add_bmp_server), with valid values."""
    from routers import GoBgp

    snippet = tomllib.loads((REPO / "etc" / "routers" / "gobgp.toml").read_text())
    (server,) = snippet["bmp-servers"]
    probe = GoBgp.__new__(GoBgp)
    probe.name = "probe"
    probe.config = {}
    probe.add_bmp_server("192.0.2.10", 11019)
    tested = probe.config["bmp-servers"][0]["config"]
    assert set(server["config"]) == set(tested)
    assert server["config"]["route-monitoring-policy"] in ("pre-policy", "post-policy",
                                                          "local-rib", "all")
    assert server["config"]["statistics-timeout"] >= 15
    assert server["config"]["port"] == 11019
