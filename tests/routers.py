"""Real routers and the collector as processes, for the end-to-end tests.

Shared by tests/test_e2e_gobgp.py, tests/test_e2e_frr.py and
tests/test_supervisord.py.  Everything binds loopback addresses only
(127.0.0.x), keeps its files (configuration, logs, sockets) in the test's
temporary directory, and is stopped by :class:`Processes` at the end of the
test, whatever happened.

Facts these helpers rely on (../shared/SENDERS.md, measured on Debian 12):

- gobgpd 3.10 reads a JSON configuration (``-t json``); ``--api-hosts`` and
  ``--pprof-disable`` keep its gRPC API on one loopback address and pprof off.
  The ``gobgp`` CLI adds about 100 routes/s, enough for the few dozen routes
  the tests inject.
- FRR's bgpd runs alone with ``-Z`` (no zebra), ``-P 0`` (no TCP vty) and
  ``--vty_socket DIR`` (vtysh talks to it there), and drops to user frr: its
  directory must belong to frr.
- BGP sessions come up several seconds after the daemons start: wait with
  :func:`wait_until`, never with a fixed sleep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

REPO = Path(__file__).resolve().parent.parent
FRR_BGPD = "/usr/lib/frr/bgpd"
VTYSH = "/usr/bin/vtysh"


class Timeout(AssertionError):
    """A condition did not become true in time (a test failure, with context)."""


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.25, context: Callable[[], str] | None = None):
    """Poll ``predicate`` until it returns something true; return that value.

    Raises :class:`Timeout` naming ``what`` (and ``context()``, e.g. a log
    tail) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ""
            if context is not None:
                try:
                    extra = "\n" + context()
                except Exception as exc:  # noqa: BLE001 - context is best effort
                    extra = f"\n(context unavailable: {exc})"
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: missing)"
    return f"--- {path} (last {lines} lines)\n" + "\n".join(text[-lines:])


def have(*programs: str) -> Optional[str]:
    """The first program of ``programs`` that is missing, or None."""
    for program in programs:
        if not (os.path.isabs(program) and os.access(program, os.X_OK)) \
                and shutil.which(program) is None:
            return program
    return None


def require(*programs: str) -> None:
    """Skip the test when a program is missing; fail instead under CI (CI=true), where
    .ci/run installs them: an end-to-end test must not pass by not running."""
    import pytest

    missing = have(*programs)
    if missing is None:
        return
    message = f"{missing} is not installed (Debian packages gobgpd, frr, supervisor)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


class Db:
    """A small autocommit psycopg2 connection for assertions."""

    def __init__(self, dsn: str):
        import psycopg2

        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def rows(self, sql: str, args=None) -> list:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def value(self, sql: str, args=None):
        rows = self.rows(sql, args)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.conn.close()


# --- processes --------------------------------------------------------------------------


class Processes:
    """Every process a test starts; :meth:`stop_all` ends them (their groups) by pid."""

    def __init__(self):
        self.procs: list = []
        self.cleanups: list = []  # called after every process is stopped

    def start(self, argv: list, log: Path, **kwargs) -> subprocess.Popen:
        out = open(log, "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0):
        """Signal ``proc`` and wait; kill its process group if it does not exit."""
        if proc.poll() is not None:
            return proc.returncode
        try:
            proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        return proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.stop(proc, timeout=5)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
            # Children left in the group (none expected) go too.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
        for cleanup in self.cleanups:
            cleanup()


def send_capture(path: Path, host: str, port: int, source: str) -> None:
    """Send a raw BMP capture as a router would, from ``source``, then close."""
    with socket.create_connection((host, port), timeout=30, source_address=(source, 0)) as sock:
        sock.sendall(path.read_bytes())
        sock.shutdown(socket.SHUT_WR)
        # Wait for the station to close its side: it has read everything.
        sock.settimeout(30)
        while sock.recv(65536):
            pass


# --- the collector ----------------------------------------------------------------------


def clean_env() -> dict:
    """This process's environment without any pybmpmon setting (the tests' own
    configuration, e.g. a developer's DB_HOST, must not leak into a collector)."""
    from pybmpmon.config import SETTINGS

    names = {setting.name for setting in SETTINGS}
    return {k: v for k, v in os.environ.items() if k not in names}


def collector_env(db_dsn: str, host: str, port: int, **overrides: str) -> dict:
    """Environment for ``pybmpmon serve`` against the database ``db_dsn`` (libpq keywords)."""
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(db_dsn)
    env = clean_env()
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
        "BMP_LISTEN_HOST": host,
        "BMP_LISTEN_PORT": str(port),
        "DB_HOST": params.get("host", "127.0.0.1"),
        "DB_PORT": str(params.get("port", 5432)),
        "DB_USER": params.get("user", "postgres"),
        "DB_NAME": params["dbname"],
        "DB_PASSWORD": params.get("password", ""),
        "BATCH_TIMEOUT": "0.1",
        "STATS_INTERVAL": "5",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SENTRY_DSN": "",
        "SHUTDOWN_TIMEOUT": "20",
    })
    env.update(overrides)
    return env


class Collector:
    """``python -m pybmpmon serve`` in its own directory (so no stray .env is read)."""

    def __init__(self, procs: Processes, workdir: Path, db_dsn: str, host: str = "127.0.0.1",
                 port: Optional[int] = None, **env: str):
        self.procs = procs
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.env = collector_env(db_dsn, host, self.port, **env)
        self.log = self.workdir / "collector.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> None:
        self.proc = self.procs.start([sys.executable, "-m", "pybmpmon", "serve"], self.log,
                                     cwd=self.workdir, env=self.env)
        wait_until(lambda: self.proc.poll() is not None or self.events("pybmpmon_listening"),
                   timeout, "the collector to listen", context=self.tail)
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited {self.proc.returncode}\n{self.tail()}")

    def stop(self, timeout: float = 40.0) -> int:
        return Processes.stop(self.proc, signal.SIGTERM, timeout)

    def records(self) -> list:
        """The JSON log records written so far (other lines skipped)."""
        out = []
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def events(self, name: str) -> list:
        return [r for r in self.records() if r.get("event") == name]

    def tail(self) -> str:
        return tail(self.log)


# --- GoBGP ------------------------------------------------------------------------------

# GoBGP's family names in its configuration.
GOBGP_FAMILIES = ("ipv4-unicast", "ipv6-unicast", "l2vpn-evpn")


class GoBgp:
    """One gobgpd: configuration as a dict, written as JSON; the ``gobgp`` CLI to drive it."""

    def __init__(self, procs: Processes, workdir: Path, name: str, address: str, asn: int,
                 bgp_port: int, api_port: Optional[int] = None):
        self.procs = procs
        self.name = name
        self.address = address
        self.asn = asn
        self.bgp_port = bgp_port
        self.api_port = api_port or free_port(address)
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "gobgpd.log"
        self.config: dict = {
            "global": {"config": {"as": asn, "router-id": address, "port": bgp_port,
                                  "local-address-list": [address]}},
            "neighbors": [],
        }
        self.proc: Optional[subprocess.Popen] = None

    def add_neighbor(self, address: str, asn: int, families: Iterable[str] = GOBGP_FAMILIES,
                     port: Optional[int] = None, passive: bool = False) -> None:
        neighbor = {
            "config": {"neighbor-address": address, "peer-as": asn},
            "transport": {"config": {"local-address": self.address,
                                     "remote-port": port or self.bgp_port,
                                     "passive-mode": passive}},
            # Short timers: sessions come up and notice loss quickly on loopback.
            "timers": {"config": {"connect-retry": 2, "hold-time": 9,
                                  "keepalive-interval": 3}},
            "afi-safis": [{"config": {"afi-safi-name": f, "enabled": True}} for f in families],
        }
        self.config["neighbors"].append(neighbor)

    def add_bmp_server(self, host: str, port: int, policy: str = "all",
                       statistics_timeout: int = 15, sys_name: str = "") -> None:
        self.config.setdefault("bmp-servers", []).append({"config": {
            "address": host, "port": port, "route-monitoring-policy": policy,
            "statistics-timeout": statistics_timeout, "sys-name": sys_name or self.name,
            "sys-descr": f"gobgpd e2e test router {self.name}",
        }})

    def set_import_policy(self, reject_community: str, tag_community: str) -> None:
        """Global import policy: reject routes with ``reject_community``, add
        ``tag_community`` to every other route."""
        self.config["defined-sets"] = {"bgp-defined-sets": {"community-sets": [
            {"community-set-name": "reject", "community-list": [reject_community]}]}}
        self.config["policy-definitions"] = [{
            "name": "import",
            "statements": [
                {"name": "reject",
                 "conditions": {"bgp-conditions": {"match-community-set": {
                     "community-set": "reject", "match-set-options": "any"}}},
                 "actions": {"route-disposition": "reject-route"}},
                {"name": "tag",
                 "actions": {"route-disposition": "accept-route",
                             "bgp-actions": {"set-community": {
                                 "options": "add",
                                 "set-community-method": {"communities-list": [tag_community]}}}}},
            ],
        }]
        self.config["global"]["apply-policy"] = {"config": {
            "import-policy-list": ["import"], "default-import-policy": "accept-route"}}

    def start(self) -> None:
        conf = self.dir / "gobgpd.json"
        conf.write_text(json.dumps(self.config, indent=2))
        self.proc = self.procs.start(
            ["gobgpd", "-f", str(conf), "-t", "json", "-p", "-l", "info",
             f"--api-hosts={self.address}:{self.api_port}", "--pprof-disable"],
            self.log, cwd=self.dir)
        wait_until(lambda: self.proc.poll() is not None or self._api_up(), 30,
                   f"gobgpd {self.name} API", context=lambda: tail(self.log))
        if self.proc.poll() is not None:
            raise AssertionError(f"gobgpd {self.name} exited\n{tail(self.log)}")

    def _api_up(self) -> bool:
        result = subprocess.run(self._cli_argv("global"), capture_output=True, text=True,
                                timeout=20)
        return result.returncode == 0

    def _cli_argv(self, *args: str) -> list:
        return ["gobgp", "-u", self.address, "-p", str(self.api_port), *args]

    def cli(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(self._cli_argv(*args), capture_output=True, text=True,
                                timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"gobgp {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result.stdout

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "-j") or "null")

    def neighbor_state(self, address: str) -> str:
        try:
            info = self.cli_json("neighbor", address)
        except (AssertionError, ValueError):
            return "unknown"
        state = info.get("state", {}).get("session_state")
        return {6: "established", 1: "idle", 2: "connect", 3: "active", 4: "opensent",
                5: "openconfirm"}.get(state, str(state))

    def established(self, *addresses: str) -> bool:
        return all(self.neighbor_state(a) == "established" for a in addresses)

    def stop(self) -> None:
        if self.proc is not None:
            Processes.stop(self.proc)


# --- FRR --------------------------------------------------------------------------------


class Frr:
    """FRR's bgpd alone (no zebra), with the BMP module; vtysh on a private socket dir.

    bgpd drops to user frr, so its configuration, pid file and vty socket live in a
    directory of its own under the system temporary directory, owned by frr (pytest's
    temporary directories are private to root); the log stays in ``workdir``.
    """

    def __init__(self, procs: Processes, workdir: Path, name: str, address: str,
                 bgp_port: int, config: str):
        self.procs = procs
        self.name = name
        self.address = address
        self.bgp_port = bgp_port
        self.log = Path(workdir) / f"{name}-bgpd.log"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"pybmpmon-frr-{name}-"))
        procs.cleanups.append(lambda: shutil.rmtree(self.run_dir, ignore_errors=True))
        self.conf = self.run_dir / "bgpd.conf"
        self.conf.write_text(config)
        (Path(workdir) / f"{name}-bgpd.conf").write_text(config)  # for the curious
        try:
            account = pwd.getpwnam("frr")
        except KeyError:
            account = None
        if account is not None:
            for path in (self.run_dir, self.conf):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = self.procs.start(
            [FRR_BGPD, "-f", str(self.conf), "-M", "bmp", "-Z", "-p", str(self.bgp_port),
             "-l", self.address, "-P", "0", "-i", str(self.run_dir / "bgpd.pid"),
             "--vty_socket", str(self.run_dir), "--log", "stdout"],
            self.log, cwd=self.run_dir)
        wait_until(lambda: self.proc.poll() is not None or self._vty_up(), 30,
                   f"bgpd {self.name} vty", context=lambda: tail(self.log))
        if self.proc.poll() is not None:
            raise AssertionError(f"bgpd {self.name} exited\n{tail(self.log)}")

    def _vty_up(self) -> bool:
        result = subprocess.run([VTYSH, "--vty_socket", str(self.run_dir), "-d", "bgpd",
                                 "-c", "show version"], capture_output=True, text=True,
                                timeout=20)
        return result.returncode == 0

    def vtysh(self, *commands: str) -> str:
        argv = [VTYSH, "--vty_socket", str(self.run_dir), "-d", "bgpd"]
        for command in commands:
            argv += ["-c", command]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise AssertionError(f"vtysh {commands} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result.stdout

    def configure(self, *lines: str) -> str:
        return self.vtysh("configure terminal", *lines)

    def stop(self) -> None:
        if self.proc is not None:
            Processes.stop(self.proc)


# --- routes, as sources announce them and the database should show them -------------------

# route_state columns compared (besides the key and the withdrawn/stale flags).
COLUMNS = ("next_hop", "origin", "as_path", "med", "local_pref", "communities",
           "large_communities", "ext_communities", "aggregator", "originator_id",
           "cluster_list")
GOBGP_FAMILY = {"ipv4": "ipv4_unicast", "ipv6": "ipv6_unicast", "evpn": "evpn"}


def sorted_or_none(items) -> Optional[tuple]:
    """Array columns are compared as sorted tuples, NULL (None) when empty."""
    items = tuple(items or ())
    return tuple(sorted(items)) if items else None


@dataclasses.dataclass(frozen=True)
class Route:
    """One route of a source: the ``gobgp global rib add`` words that make it, and the
    route_state columns it should get, as the source sends it (``expect``)."""

    family: str  # gobgp -a: ipv4, ipv6, evpn
    nlri: tuple  # CLI words naming the route (a prefix; EVPN: route type and key)
    key: str  # its `nlri` text in the database
    attrs: tuple  # CLI words of its path attributes
    expect: tuple  # (column, value) pairs, in COLUMNS order

    @property
    def afi_safi(self) -> str:
        return GOBGP_FAMILY[self.family]

    def has_community(self, community: str) -> bool:
        return community in (dict(self.expect)["communities"] or ())

    def columns(self, **changes) -> tuple:
        """``expect`` with some columns changed (what a monitored router makes of it)."""
        values = dict(self.expect)
        values.update(changes)
        return tuple(values[c] for c in COLUMNS)

    def tagged(self, community: str, **changes) -> tuple:
        """The columns with ``community`` added (an import policy's tag)."""
        values = dict(self.expect)
        return self.columns(communities=sorted_or_none((values["communities"] or ())
                                                       + (community,)), **changes)


def _path_words(path) -> str:
    return " ".join("{" + ",".join(map(str, p)) + "}" if isinstance(p, tuple) else str(p)
                    for p in path)


def _flat(path) -> tuple:
    out: list = []
    for p in path:
        out.extend(p if isinstance(p, tuple) else (p,))
    return tuple(out)


def unicast(prefix: str, next_hop: str, *, source_as: Optional[int] = None,
            origin: str = "igp", path=(), med=None, local_pref=None, communities=(),
            large=(), rt=(), aggregator=None) -> Route:
    """A unicast route; ``source_as`` set for an eBGP source (it prepends its AS and
    sends no LOCAL_PREF).  ``path`` items are ASNs or tuples (an AS_SET)."""
    family = "ipv6" if ":" in prefix else "ipv4"
    attrs = ["nexthop", next_hop, "origin", origin]
    if path:
        attrs += ["aspath", _path_words(path)]
    if med is not None:
        attrs += ["med", str(med)]
    if local_pref is not None:
        attrs += ["local-pref", str(local_pref)]
    if communities:
        attrs += ["community", ",".join(communities)]
    if large:
        attrs += ["large-community", ",".join(large)]
    if aggregator:
        attrs += ["aggregator", aggregator]
    for target in rt:
        attrs += ["rt", target]
    expect = dict.fromkeys(COLUMNS)
    expect.update({
        "next_hop": next_hop,
        "origin": origin,
        "as_path": ((source_as,) if source_as else ()) + _flat(path),
        "med": med,
        "local_pref": None if source_as else local_pref,
        "communities": sorted_or_none(communities),
        "large_communities": sorted_or_none(large),
        "ext_communities": sorted_or_none(f"rt:{t}" for t in rt),
        "aggregator": aggregator,
    })
    return Route(family, (prefix,), prefix, tuple(attrs), tuple(expect.items()))


def evpn(nlri: tuple, key: str, next_hop: str, rt: str, *, source_as: int, extra=(),
         ext=()) -> Route:
    """An EVPN route from an eBGP source, with a route target and VXLAN encapsulation."""
    attrs = (*extra, "rt", rt, "encap", "vxlan", "nexthop", next_hop)
    expect = dict.fromkeys(COLUMNS)
    expect.update({
        "next_hop": next_hop,
        "origin": "incomplete",  # the gobgp CLI's default for EVPN routes
        "as_path": (source_as,),
        "ext_communities": tuple(sorted((f"rt:{rt}", "encap:vxlan", *ext))),
    })
    return Route("evpn", nlri, key, attrs, tuple(expect.items()))


class Model:
    """What the database should hold: present routes per view, and each key's history.

    Keys are (rib, peer address, afi_safi, nlri).  History is the sequence of
    distinct states (column tuples, or "W" for withdrawn): what route_updates shows
    once consecutive duplicates (a BMP reconnect re-sends every route) are collapsed.
    """

    def __init__(self):
        self.present: dict = {}
        self.history: dict = {}

    def set(self, rib: str, peer: str, route: Route, state) -> None:
        key = (rib, peer, route.afi_safi, route.key)
        seq = self.history.setdefault(key, [])
        if state == "W":
            if key in self.present:
                del self.present[key]
                seq.append("W")
            return
        self.present[key] = state
        if not seq or seq[-1] != state:
            seq.append(state)

    def withdraw_peer(self, peer: str) -> None:
        for key in [k for k in self.present if k[1] == peer]:
            del self.present[key]
            self.history[key].append("W")

    def expected_history(self) -> dict:
        return {k: v for k, v in self.history.items() if v}


class Source:
    """A source gobgpd and the routes it currently announces; ``on_change(peer, route,
    withdrawn)`` updates the model the way the monitored router will."""

    def __init__(self, gobgp: GoBgp, on_change: Callable):
        self.gobgp = gobgp
        self.on_change = on_change
        self.routes: dict = {}

    def announce(self, name: str, route: Route) -> None:
        self.gobgp.cli("global", "rib", "add", "-a", route.family, *route.nlri, *route.attrs)
        self.routes[name] = route
        self.on_change(self.gobgp.address, route, False)

    def withdraw(self, name: str) -> Route:
        route = self.routes.pop(name)
        self.gobgp.cli("global", "rib", "del", "-a", route.family, *route.nlri)
        self.on_change(self.gobgp.address, route, True)
        return route


# --- reading the database --------------------------------------------------------------

_COLUMN_SQL = ("host(next_hop), origin, as_path, med, local_pref, communities, "
               "large_communities, ext_communities, aggregator, host(originator_id), "
               "cluster_list")


def _columns(row) -> tuple:
    (next_hop, origin, as_path, med, local_pref, comms, large, ext, aggregator, originator,
     clusters) = row
    return (next_hop, origin, tuple(as_path or ()), med, local_pref, sorted_or_none(comms),
            sorted_or_none(large), sorted_or_none(ext), aggregator, originator,
            tuple(clusters) if clusters else None)


def route_state(db: Db, router_ip: str) -> dict:
    """key -> {"present", "stale", "cause", "columns"} for every route_state row."""
    out = {}
    for row in db.rows("SELECT rib, host(peer_ip), afi_safi, nlri, is_withdrawn, stale, cause, "
                       f"{_COLUMN_SQL} FROM route_state WHERE router_ip = %s", (router_ip,)):
        out[row[:4]] = {"present": not row[4], "stale": row[5], "cause": row[6],
                        "columns": _columns(row[7:])}
    return out


def present(state: dict) -> dict:
    """key -> columns of the routes route_state shows as present (current_routes)."""
    return {k: v["columns"] for k, v in state.items() if v["present"]}


def history(db: Db, router_ip: str, drop_leading_withdrawals: bool = False) -> dict:
    """key -> distinct consecutive states in route_updates, in the order stored.

    Strategy: not ordered by ``time``, which is the BMP per-peer timestamp: GoBGP
    stamps a route with the time it learned the path, so a Loc-RIB withdrawal or a
    re-sent route carries an older time than rows stored before it.  The writer
    commits one batch per transaction in arrival order, and route_history (under
    the route_updates view) is append-only: (transaction id, heap position) is
    the arrival order.

    ``drop_leading_withdrawals``: withdrawals of a route never announced (FRR sends
    one for each route its import policy rejects) are left out.
    """
    out: dict = {}
    rows = db.rows(f"SELECT s.rib, host(s.peer_ip), s.afi_safi, h.nlri, h.is_withdrawn, "
                   f"{_COLUMN_SQL} FROM route_history h "
                   "JOIN route_scopes s ON s.scope_id = h.scope_id "
                   "LEFT JOIN route_attrs a ON a.attr_hash = h.attr_hash "
                   "WHERE s.router_ip = %s ORDER BY h.xmin::text::bigint, h.ctid", (router_ip,))
    for row in rows:
        state = "W" if row[4] else _columns(row[5:])
        seq = out.setdefault(row[:4], [])
        if state == "W" and not seq and drop_leading_withdrawals:
            continue
        if not seq or seq[-1] != state:
            seq.append(state)
    return {k: v for k, v in out.items() if v}


def diff(expected: dict, actual: dict, limit: int = 30) -> str:
    """The keys whose values differ, readable in a test failure."""
    lines = []
    for key in sorted(set(expected) | set(actual), key=str):
        if expected.get(key) != actual.get(key):
            lines.append(f"{key}:\n   expected {expected.get(key)}\n   actual   {actual.get(key)}")
    more = f"\n... {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more
