"""pybmpmon as operators deploy it: under supervisord, with etc/supervisord.conf.

The program section is used as shipped; only what depends on the machine is
replaced (command, working directory with its .env, user, log path).  A
supervisord of our own (its socket, log and pid file in the test's directory)
runs it while:

- a router streams: a corpus capture replayed from 127.0.0.25, and FRR's bgpd
  (BMP only, no BGP neighbor) connected from 127.0.0.1;
- ``supervisorctl stop`` must flush everything accepted: BATCH_TIMEOUT is 60 s
  and BATCH_SIZE huge, so nothing is written before the stop, and afterwards
  the database must hold every route of the capture; supervisord must report
  exit status 0, not a SIGKILL;
- ``supervisorctl start`` again: bgpd reconnects by itself;
- the collector is killed (SIGKILL): supervisord restarts it (autorestart) and
  bgpd reconnects again.

Also: the shipped settings themselves (stop signal, stop wait above
SHUTDOWN_TIMEOUT, log rotation), and etc/filebeat.yml against the log lines
this run produced.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from routers import (
    FRR_BGPD,
    REPO,
    VTYSH,
    Db,
    Frr,
    Processes,
    clean_env,
    collector_env,
    free_port,
    require,
    send_capture,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PROGRAM_FILE = REPO / "etc" / "supervisord.conf"
FILEBEAT_FILE = REPO / "etc" / "filebeat.yml"
ENV_EXAMPLE = REPO / ".env.example"
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
CAPTURE = "gobgp-all-1"  # pre-policy, post-policy and Loc-RIB, IPv4/IPv6/EVPN
REPLAY_FROM = "127.0.0.25"
FRR_ADDRESS = "127.0.0.23"
FRR_ROUTER = "127.0.0.1"  # bgpd connects from the default source address
SHUTDOWN_TIMEOUT = 20


def program_section() -> dict:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(PROGRAM_FILE)
    assert parser.sections() == ["program:pybmpmon"]
    return dict(parser["program:pybmpmon"])


def _seconds_default(name: str) -> float:
    from pybmpmon.config import SETTINGS

    return float(next(s.default for s in SETTINGS if s.name == name))


def _bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(KB|MB|GB)?", text.strip(), re.IGNORECASE)
    assert match, text
    return int(match.group(1)) * {None: 1, "KB": 1 << 10, "MB": 1 << 20,
                                  "GB": 1 << 30}[(match.group(2) or "").upper() or None]


def test_program_settings():
    """What the issue and SPEC §10 ask of the program section, as shipped."""
    program = program_section()
    executable, *args = program["command"].split()
    assert Path(executable).name == "pybmpmon" and args == ["serve"]
    assert program["directory"] and program["user"] and program["user"] != "root"
    assert program["stopsignal"] == "TERM"
    assert program["autorestart"] == "true" and program["autostart"] == "true"
    # Above SHUTDOWN_TIMEOUT's default, with room for the exit itself.
    assert int(program["stopwaitsecs"]) >= _seconds_default("SHUTDOWN_TIMEOUT") + 10
    assert program["exitcodes"] == "0"
    assert program["redirect_stderr"] == "true"
    assert program["stdout_logfile"].startswith("/var/log/")
    assert _bytes(program["stdout_logfile_maxbytes"]) >= 1 << 20
    assert int(program["stdout_logfile_backups"]) >= 1
    # No secret in the program file (it is usually world-readable).
    assert not re.search(r"PASSWORD|DSN|DATABASE_URL", program.get("environment", ""))


# --- running supervisord -------------------------------------------------------------------


def supervisor_commands():
    """(supervisord argv, supervisorctl argv) from Debian's package or the pip one."""
    if shutil.which("supervisord") and shutil.which("supervisorctl"):
        return [shutil.which("supervisord")], [shutil.which("supervisorctl")]
    try:
        import supervisor  # noqa: F401
    except ImportError:
        return None
    return ([sys.executable, "-m", "supervisor.supervisord"],
            [sys.executable, "-m", "supervisor.supervisorctl"])


class Supervisor:
    """A private supervisord running the shipped program section."""

    def __init__(self, procs: Processes, workdir: Path, settings: dict):
        self.procs = procs
        self.dir = workdir
        self.app = workdir / "app"
        self.app.mkdir()
        self.program_log = workdir / "pybmpmon.log"
        self.log = workdir / "supervisord.log"
        self.conf = workdir / "supervisord.conf"
        commands = supervisor_commands()
        assert commands is not None
        self.supervisord, self.supervisorctl = commands
        # The settings go where operators put them: the .env in the working directory.
        (self.app / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        program = program_section()
        program.update({
            "command": f"{sys.executable} -m pybmpmon serve",
            "directory": str(self.app),
            "stdout_logfile": str(self.program_log),
            "environment": program.get("environment", "") + f',PYTHONPATH="{REPO}"',
        })
        if os.geteuid() == 0:
            program["user"] = "root"
        else:
            program.pop("user")
        lines = [
            "[unix_http_server]", f"file={workdir}/supervisor.sock", "",
            "[supervisord]", f"logfile={self.log}", f"pidfile={workdir}/supervisord.pid",
            f"childlogdir={workdir}", "nodaemon=true", "loglevel=info",
        ]
        if os.geteuid() == 0:
            lines.append("user=root")
        lines += [
            "", "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "", "[supervisorctl]", f"serverurl=unix://{workdir}/supervisor.sock", "",
            "[program:pybmpmon]",
        ]
        lines += [f"{key}={value}" for key, value in program.items()]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.pids: set = set()  # every collector pid seen, for the final clean-up

    def start(self) -> None:
        # supervisord passes its environment to the program: keep the tests' own
        # pybmpmon settings out of it, so that only the .env configures it.
        self.proc = self.procs.start([*self.supervisord, "-c", str(self.conf)],
                                     self.dir / "supervisord.out", env=clean_env(),
                                     cwd=self.dir)
        wait_until(lambda: self.proc.poll() is not None or self.state() != "unknown", 30,
                   "supervisord to answer", context=lambda: tail(self.log))

    def shutdown(self) -> None:
        """Stop the program (its graceful stop) and supervisord; then make sure no
        collector it started is left, whatever happened."""
        if self.proc is not None and self.proc.poll() is None:
            self.ctl("shutdown")
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def ctl(self, *args: str) -> str:
        result = subprocess.run([*self.supervisorctl, "-c", str(self.conf), *args],
                                capture_output=True, text=True, timeout=120)
        return result.stdout + result.stderr

    def status(self) -> tuple:
        """(state, pid) of the program, e.g. ("RUNNING", 1234)."""
        out = self.ctl("status", "pybmpmon")
        match = re.search(r"^pybmpmon\s+([A-Z]+)(?:\s+pid (\d+))?", out, re.MULTILINE)
        if not match:
            return "unknown", None
        pid = int(match.group(2)) if match.group(2) else None
        if pid is not None:
            self.pids.add(pid)
        return match.group(1), pid

    def state(self) -> str:
        return self.status()[0]

    def records(self) -> list:
        out = []
        try:
            lines = self.program_log.read_text(errors="replace").splitlines()
        except OSError:
            return out
        for line in lines:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def events(self, name: str, router: str | None = None) -> list:
        return [r for r in self.records() if r.get("event") == name
                and (router is None or r.get("router") == router)]

    def context(self) -> str:
        return "\n".join((tail(self.log), tail(self.program_log)))


def reference(path: Path):
    """(route count, present route keys) of a capture, decoded with pybmpmon's codec:
    every NLRI announced or withdrawn, and what stays present at the end (a Peer
    Down removes that peer's routes; the end of the stream only makes them stale)."""
    from pybmpmon.bmp.model import PeerDown, RouteMonitoring
    from pybmpmon.session import RouterSession

    session = RouterSession()
    events = session.feed(path.read_bytes())
    assert session.error is None
    count = 0
    state: dict = {}
    for event in events:
        if isinstance(event, PeerDown):
            gone = (str(event.peer.address), event.peer.distinguisher)
            for key in [k for k in state if (k[1], k[4]) == gone]:
                del state[key]
        if not isinstance(event, RouteMonitoring):
            continue
        peer = event.peer
        for withdrawn, sets in ((True, event.update.withdrawn), (False, event.update.announced)):
            for route_set in sets:
                for nlri in route_set.nlri:
                    count += 1
                    key = (peer.rib, str(peer.address), route_set.afi_safi, nlri.key,
                           peer.distinguisher)
                    if withdrawn:
                        state.pop(key, None)
                    else:
                        state[key] = True
    return count, {k[:4] for k in state}


def bgpd_config(station_port: int) -> str:
    return f"""frr defaults traditional
hostname frr-supervisord-test
!
router bgp 65000
 bgp router-id {FRR_ADDRESS}
 bmp targets supervisord
  bmp connect 127.0.0.1 port {station_port} min-retry 100 max-retry 1000
 exit
exit
"""


def test_stop_flushes_start_reconnects(pg_server, pg_template, tmp_path):
    if supervisor_commands() is None:
        require("supervisord")
    require(FRR_BGPD, VTYSH)
    capture = CORPUS / f"{CAPTURE}.bmp"
    assert capture.is_file(), f"no corpus capture {capture}: set PYBMPMON_CORPUS"
    name = f"pybmpmon_supervisord_{os.getpid()}"
    pg_server.admin(f"DROP DATABASE IF EXISTS {name}",
                    f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    dsn = pg_server.dsn(name)
    port = free_port()
    params = collector_env(dsn, "127.0.0.1", port)
    settings = {key: params[key] for key in ("BMP_LISTEN_HOST", "BMP_LISTEN_PORT", "DB_HOST",
                                             "DB_PORT", "DB_USER", "DB_NAME")}
    settings.update({"BATCH_SIZE": "1000000", "BATCH_TIMEOUT": "60", "STATS_INTERVAL": "5",
                     "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT), "LOG_FORMAT": "json"})
    procs = Processes()
    db = Db(dsn)
    sv = None
    try:
        sv = Supervisor(procs, tmp_path, settings)
        sv.start()
        wait_until(lambda: sv.state() == "RUNNING" and sv.events("pybmpmon_listening"), 60,
                   "pybmpmon RUNNING and listening", context=sv.context)
        first_pid = sv.status()[1]

        router = Frr(procs, tmp_path, "router", FRR_ADDRESS, free_port(FRR_ADDRESS),
                     bgpd_config(port))
        router.start()
        wait_until(lambda: sv.events("router_initiation", FRR_ROUTER), 30,
                   "bgpd's BMP session", context=sv.context)

        send_capture(capture, "127.0.0.1", port, REPLAY_FROM)
        wait_until(lambda: sv.events("router_disconnected", REPLAY_FROM), 30,
                   "the collector to read the whole capture", context=sv.context)
        count, keys = reference(capture)
        read = sv.events("router_disconnected", REPLAY_FROM)[0]
        assert read["routes"] == count and read["errors"] == 0
        # Accepted, not yet written: the stop must flush it.
        assert db.value("SELECT count(*) FROM route_updates") == 0

        stopped_at = time.time()
        out = sv.ctl("stop", "pybmpmon")
        assert "pybmpmon: stopped" in out, out
        assert sv.state() == "STOPPED"
        assert "stopped: pybmpmon (exit status 0)" in sv.log.read_text(), sv.context()
        assert sv.events("pybmpmon_stopped")[-1]["flushed"] is True
        assert time.time() - stopped_at < SHUTDOWN_TIMEOUT

        stored = db.value("SELECT count(*) FROM route_updates WHERE router_ip = %s "
                          "AND cause IS NULL", (REPLAY_FROM,))
        assert stored == count
        rows = db.rows("SELECT rib, host(peer_ip), afi_safi, nlri FROM current_routes "
                       "WHERE router_ip = %s", (REPLAY_FROM,))
        assert set(rows) == keys and len(rows) == len(keys)
        assert db.value("SELECT count(*) FROM current_routes WHERE router_ip = %s "
                        "AND NOT stale", (REPLAY_FROM,)) == 0  # its connection ended
        assert db.rows("SELECT host(router_ip), connected FROM routers ORDER BY 1") == [
            (FRR_ROUTER, False), (REPLAY_FROM, False)]

        # Start again: bgpd reconnects by itself.
        connects = len(sv.events("router_connected", FRR_ROUTER))
        out = sv.ctl("start", "pybmpmon")
        assert "pybmpmon: started" in out, out
        wait_until(lambda: len(sv.events("router_connected", FRR_ROUTER)) > connects, 30,
                   "bgpd to reconnect after start", context=sv.context)
        second_pid = sv.status()[1]
        assert second_pid not in (None, first_pid)

        # A crash: supervisord restarts the collector, bgpd reconnects again.
        connects = len(sv.events("router_connected", FRR_ROUTER))
        os.kill(second_pid, signal.SIGKILL)
        wait_until(lambda: sv.status()[0] == "RUNNING" and sv.status()[1] != second_pid, 30,
                   "supervisord to restart the collector", context=sv.context)
        wait_until(lambda: len(sv.events("router_connected", FRR_ROUTER)) > connects, 30,
                   "bgpd to reconnect after the restart", context=sv.context)
        assert "exited: pybmpmon (terminated by SIGKILL; not expected)" in sv.log.read_text()

        out = sv.ctl("stop", "pybmpmon")
        assert "pybmpmon: stopped" in out, out
        assert sv.log.read_text().count("stopped: pybmpmon (exit status 0)") == 2
        (connected, last_connected) = db.rows(
            "SELECT connected, extract(epoch FROM last_connected) FROM routers "
            "WHERE router_ip = %s", (FRR_ROUTER,))[0]
        assert connected is False and last_connected > stopped_at
        assert db.value("SELECT sys_name FROM routers WHERE router_ip = %s",
                        (FRR_ROUTER,)) == "frr-supervisord-test"
        errors = [r for r in sv.records() if r.get("level") in ("ERROR", "CRITICAL")]
        assert errors == []
    finally:
        if sv is not None:
            sv.shutdown()
        procs.stop_all()
        db.close()
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- Filebeat ------------------------------------------------------------------------------

# Root names that ECS (and Filebeat itself) use for objects: a scalar there breaks the
# document's mapping.
ECS_OBJECTS = frozenset("""agent client cloud container data_stream destination device dll dns
    ecs email error event faas file group host http input log network observer orchestrator
    organization package process registry related rule server service source span threat tls
    trace transaction url user user_agent vulnerability""".split())


def _load_yaml(path: Path):
    try:
        import yaml
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("PyYAML is needed to read etc/filebeat.yml (test extra)")
        pytest.skip("PyYAML is not installed")
    return yaml.safe_load(path.read_text())


def _get(doc: dict, path: str):
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _put(doc: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{part} is not an object")
        node = child
    node[last] = value


def _delete(doc: dict, path: str) -> None:
    *parents, last = path.split(".")
    node = _get(doc, ".".join(parents)) if parents else doc
    del node[last]


def _deep_update(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _condition(doc: dict, when) -> bool:
    if when is None:
        return True
    (kind, arg), = when.items()
    if kind == "not":
        return not _condition(doc, arg)
    if kind == "has_fields":
        for path in arg:
            try:
                _get(doc, path)
            except KeyError:
                return False
        return True
    raise AssertionError(f"condition {kind} not modelled by this test")


def _go_time(text: str, layout: str):
    from datetime import datetime, timezone

    assert layout == "2006-01-02T15:04:05.999Z", layout  # the layout this test models
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def filebeat_event(line: str, input_config: dict) -> dict:
    """What Filebeat's filestream input makes of one line, for the parts of the
    configuration that etc/filebeat.yml uses (ndjson parser, then the input's
    processors), following libbeat's readjson and jsontransform.WriteJSONKeys."""
    doc: dict = {"log": {"offset": 0, "file": {"path": "pybmpmon.log"}}, "message": ""}
    (parser,) = input_config["parsers"]
    ndjson = parser["ndjson"]
    assert ndjson["target"] == "" and ndjson["overwrite_keys"] and ndjson["add_error_key"]
    try:
        keys = json.loads(line)
        assert isinstance(keys, dict)
    except (ValueError, AssertionError):
        doc["message"] = line
        doc["error"] = {"message": "Error decoding JSON", "type": "json"}
        keys = {}
    for special in ("@timestamp", "@metadata", "type"):
        if special in keys:
            value = keys.pop(special)
            if special == "type" and isinstance(value, str) and value[:1] not in ("", "_"):
                doc["type"] = value
            else:
                doc["error"] = {"message": f"{special} not overwritten", "type": "json"}
    _deep_update(doc, keys)
    for processor in input_config["processors"]:
        (kind, conf), = processor.items()
        if not _condition(doc, conf.get("when")):
            continue
        if kind == "timestamp":
            try:
                doc["@timestamp"] = _go_time(_get(doc, conf["field"]), *conf["layouts"])
            except KeyError:
                assert conf.get("ignore_missing")
        elif kind == "rename":
            for field in conf["fields"]:
                try:
                    value = _get(doc, field["from"])
                except KeyError:
                    assert conf.get("ignore_missing")
                    continue
                try:
                    _get(doc, field["to"])
                    raise AssertionError(f"rename target {field['to']} exists")
                except KeyError:
                    pass
                _delete(doc, field["from"])
                _put(doc, field["to"], value)
        elif kind == "drop_fields":
            for path in conf["fields"]:
                try:
                    _delete(doc, path)
                except KeyError:
                    assert conf.get("ignore_missing")
        elif kind == "add_fields":
            _deep_update(doc.setdefault(conf["target"], {}), conf["fields"])
        else:
            raise AssertionError(f"processor {kind} not modelled by this test")
    return doc


def _paths(value, prefix=""):
    """(dotted path, JSON type) of every leaf."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, f"{prefix}{key}.")
    elif value is not None:
        kind = {bool: "boolean", int: "long", float: "double", str: "keyword",
                list: "array"}.get(type(value), type(value).__name__)
        yield prefix[:-1], kind


@pytest.fixture(scope="module")
def log_lines(pg_server, tmp_path_factory):
    """Log lines of a collector at DEBUG, started on an empty database (so it
    migrates), that served a GoBGP and an FRR capture, a router that stayed long
    enough for a route_stats record, and a client that is no router (a framing
    error)."""
    from routers import Collector

    name = f"pybmpmon_filebeat_{os.getpid()}"
    pg_server.admin(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    workdir = tmp_path_factory.mktemp("filebeat")
    procs = Processes()
    try:
        collector = Collector(procs, workdir, pg_server.dsn(name), LOG_LEVEL="DEBUG",
                              STATS_INTERVAL="1")
        collector.start()
        for number, capture in enumerate(("gobgp-all-1", "frr-prepost-1")):
            send_capture(CORPUS / f"{capture}.bmp", collector.host, collector.port,
                         f"127.0.0.{26 + number}")
        with socket.create_connection((collector.host, collector.port),
                                      source_address=("127.0.0.28", 0)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: pybmpmon\r\n\r\n")
            sock.settimeout(30)
            while sock.recv(4096):
                pass
        with socket.create_connection((collector.host, collector.port),
                                      source_address=("127.0.0.29", 0)) as sock:
            sock.sendall((CORPUS / "gobgp-pre-policy-small-1.bmp").read_bytes())
            wait_until(lambda: collector.events("route_stats"), 10, "a route_stats record")
        assert collector.stop() == 0
        lines = collector.log.read_text().splitlines()
    finally:
        procs.stop_all()
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return lines


def _shipped(lines: list, debug: bool) -> list:
    config = _load_yaml(FILEBEAT_FILE)
    (input_config,) = config["filebeat.inputs"]
    out = []
    for line in lines:
        is_debug = '"level": "DEBUG"' in line
        if is_debug == debug:
            out.append((json.loads(line) if line.startswith("{") else None,
                        filebeat_event(line, input_config)))
    assert out
    return out


def test_filebeat_reads_the_supervisord_log():
    config = _load_yaml(FILEBEAT_FILE)
    (input_config,) = config["filebeat.inputs"]
    assert input_config["type"] == "filestream" and input_config["id"]
    assert program_section()["stdout_logfile"] in input_config["paths"]


def test_filebeat_maps_log_lines(log_lines):
    """Every INFO+ line (connections, peers, errors, statistics, start and stop) is
    JSON and becomes a document whose @timestamp is the record's, whose event name
    and level land in event.action and log.level, with no scalar where ECS has an
    object, and with one type per field across all documents."""
    types: dict = {}
    events = set()
    for record, doc in _shipped(log_lines, debug=False):
        assert record is not None and "error" not in doc or "type" not in doc["error"], doc
        assert doc["@timestamp"].isoformat(timespec="milliseconds").replace(
            "+00:00", "Z") == record["timestamp"]
        assert doc["event"]["action"] == record["event"] and doc["log"]["level"]
        assert doc["event"]["dataset"] == "pybmpmon"
        events.add(record["event"])
        for key, value in doc.items():
            if key in ECS_OBJECTS:
                assert isinstance(value, dict), (key, value, record)
        for path, kind in _paths({k: v for k, v in doc.items() if k != "@timestamp"}):
            types.setdefault(path, set()).add(kind)
    mixed = {path: kinds for path, kinds in types.items() if len(kinds) > 1}
    assert mixed == {}, f"fields with more than one type: {mixed}"
    assert {"pybmpmon_starting", "router_connected", "bmp_peer_up", "bmp_peer_down",
            "bmp_parse_error", "route_stats", "pybmpmon_stopped"} <= events, events
    assert "error.message" in types  # the parse error's text


def test_filebeat_keeps_debug_records(log_lines):
    """The DEBUG hex dump records ship too: no key Filebeat refuses (a non-string
    "type" is dropped with an error)."""
    for record, doc in _shipped(log_lines, debug=True):
        assert "error" not in doc, (record, doc.get("error"))
        assert doc["event"]["action"] == record["event"]
