"""End to end with FRR: bgpd with its BMP module, fed by gobgpd sources, and
``pybmpmon serve`` with a real PostgreSQL.

Topology, on loopback only (as in the corpus captures, ../shared/SENDERS.md)::

    src1 gobgpd 127.0.0.12 AS 65001 --eBGP--+
                                            +--> FRR bgpd 127.0.0.13 AS 65000 --BMP--> pybmpmon
    src2 gobgpd 127.0.0.14 AS 65000 --iBGP--+     (bmp monitor pre-policy and post-policy
                                                   for IPv4, IPv6 and EVPN; bmp mirror)

bgpd runs alone (``-Z``: no zebra), with ``soft-reconfiguration inbound`` (FRR
builds pre-policy from the Adj-RIB-In) and an import route-map that denies routes
carrying 65001:666 and adds 65000:1 to the others.

What FRR 8.4 sends, and the tests therefore expect:

- both views are rebuilt "as if advertised back": eBGP paths gain AS 65000 in
  front, iBGP paths gain ORIGINATOR_ID (the source) and CLUSTER_LIST (bgpd);
- a route the route-map denies is sent as a withdrawal, in post-policy and also
  in pre-policy while live (a route changed to be denied is first sent in
  pre-policy with its new attributes, then withdrawn); the table sync of a new BMP
  session sends it in pre-policy (from the Adj-RIB-In);
- End-of-RIB after each table sync, which sweeps the routes withdrawn while the
  BMP session was down;
- Peer Down 2 (FSM event 0) for a local ``neighbor shutdown``, 3 with the Cease
  NOTIFICATION when the source shuts the session; no Termination message ever.

The scenario runs once (module fixture ``lab``) and keeps a snapshot of the
database after each phase; each test checks one aspect against them.
"""

from __future__ import annotations

import os
import time

import pytest

from routers import (
    FRR_BGPD,
    VTYSH,
    COLUMNS,
    Collector,
    Db,
    Frr,
    GoBgp,
    Model,
    Processes,
    Route,
    Source,
    diff,
    evpn,
    free_port,
    history,
    present,
    require,
    route_state,
    unicast,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

MON, SRC1, SRC2 = "127.0.0.13", "127.0.0.12", "127.0.0.14"
MON_AS, SRC1_AS = 65000, 65001
ROUTER_IP = "127.0.0.1"  # bgpd connects to the station from the default source address
HOSTNAME = "frr-e2e-mon"
REJECT, TAG = "65001:666", "65000:1"
VIEWS = ("adj_in_pre", "adj_in_post")
SETTLE = 30.0


def ebgp(prefix: str, next_hop: str, **kw) -> Route:
    return unicast(prefix, next_hop, source_as=SRC1_AS, **kw)


def ibgp(prefix: str, next_hop: str, **kw) -> Route:
    return unicast(prefix, next_hop, **kw)


RD100, RD101, RD102 = "192.0.2.1:100", "192.0.2.1:101", "192.0.2.1:102"

SRC1_ROUTES = {
    "a": ebgp("10.11.0.0/24", "192.0.2.1", path=(65100, 65200), med=10,
              communities=("65001:1", "65001:2"), large=("4200000001:1:1",), rt=("65001:2",)),
    "b": ebgp("10.11.1.0/24", "192.0.2.2", origin="egp", communities=("65001:1", REJECT)),
    "c": ebgp("10.11.2.0/25", "198.51.100.1", origin="incomplete", path=(4200000001,)),
    "d": ebgp("10.11.3.1/32", "192.0.2.1"),
    "e": ebgp("10.11.4.0/24", "192.0.2.1", med=40, communities=("65001:4",)),
    "f": ebgp("10.11.5.0/24", "192.0.2.1", communities=(REJECT,)),
    "g": ebgp("10.11.6.0/24", "192.0.2.1", communities=("65001:6",)),
    "h": ebgp("10.11.7.0/24", "192.0.2.1", large=("65001:7:7",)),
    "a6": ebgp("2001:db8:11::/48", "2001:db8::1", path=(65100,), communities=("65001:1",)),
    "b6": ebgp("2001:db8:11:100::/56", "2001:db8::2", communities=(REJECT,)),
    "c6": ebgp("2001:db8:11:200::/64", "2001:db8::1", origin="incomplete",
               large=("65001:2:3",)),
    "t2": evpn(("macadv", "aa:bb:cc:00:00:01", "10.100.0.1", "etag", "0", "label", "10100",
                "rd", RD100),
               f"type2 {RD100} etag 0 mac aa:bb:cc:00:00:01 ip 10.100.0.1", "192.0.2.10",
               "65001:100", source_as=SRC1_AS),
    "t3": evpn(("multicast", "192.0.2.100", "etag", "0", "rd", RD101),
               f"type3 {RD101} etag 0 ip 192.0.2.100", "192.0.2.11", "65001:101",
               source_as=SRC1_AS),
    "t5": evpn(("prefix", "10.200.0.0/24", "etag", "0", "label", "10202", "rd", RD102),
               f"type5 {RD102} etag 0 prefix 10.200.0.0/24", "192.0.2.12", "65001:102",
               source_as=SRC1_AS),
}
SRC2_ROUTES = {
    "s1": ibgp("10.12.0.0/24", "192.0.2.20", local_pref=200),
    "s2": ibgp("10.12.1.0/24", "192.0.2.21", local_pref=100, med=7, communities=("65002:1",)),
    "s3": ibgp("2001:db8:12::/48", "2001:db8::20", local_pref=150, origin="egp"),
}
CHANGES_SRC1 = {
    "e": ebgp("10.11.4.0/24", "192.0.2.2", path=(65500,), med=999,
              communities=("65001:4", "65001:999"), large=("65001:9:9",)),
    "f": ebgp("10.11.5.0/24", "192.0.2.1", communities=("65001:5",)),  # now accepted
    "g": ebgp("10.11.6.0/24", "192.0.2.1", communities=("65001:6", REJECT)),  # now denied
    "t3": evpn(("multicast", "192.0.2.100", "etag", "0", "rd", RD101),
               f"type3 {RD101} etag 0 ip 192.0.2.100", "192.0.2.12", "65001:1101",
               source_as=SRC1_AS),
}
CHANGES_SRC2 = {"s1": ibgp("10.12.0.0/24", "192.0.2.20", local_pref=50)}
WITHDRAW_SRC1 = ("d", "c6", "t2")
WITHDRAW_SRC2 = ("s2",)
NEW_WHILE_DOWN = ebgp("10.11.8.0/24", "192.0.2.1", path=(65100,))


def bgpd_config(bgp_port: int, station: tuple) -> str:
    """bgpd.conf: two neighbors on loopback, the import route-map, the BMP target."""
    def neighbor(address: str, asn: int, description: str) -> str:
        return "\n".join(f" neighbor {address} {line}" for line in (
            f"remote-as {asn}", f"port {bgp_port}", f"update-source {MON}",
            "disable-connected-check", f"description {description}", "timers 3 9",
            "timers connect 2"))

    def family(name: str) -> str:
        lines = [f" address-family {name}"]
        for address in (SRC1, SRC2):
            lines += [f"  neighbor {address} activate",
                      f"  neighbor {address} soft-reconfiguration inbound",
                      f"  neighbor {address} route-map IMPORT in"]
        return "\n".join(lines + [" exit-address-family"])

    monitors = "\n".join(f"  bmp monitor {f} {v}" for f in ("ipv4 unicast", "ipv6 unicast",
                                                            "l2vpn evpn")
                         for v in ("pre-policy", "post-policy"))
    return f"""frr defaults traditional
hostname {HOSTNAME}
!
bgp community-list standard REJECT seq 5 permit {REJECT}
route-map IMPORT deny 10
 match community REJECT
exit
route-map IMPORT permit 20
 set community {TAG} additive
exit
!
router bgp {MON_AS}
 bgp router-id {MON}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
{neighbor(SRC1, SRC1_AS, "src1 eBGP")}
{neighbor(SRC2, MON_AS, "src2 iBGP")}
{family("ipv4 unicast")}
{family("ipv6 unicast")}
{family("l2vpn evpn")}
 bmp targets e2e
  {bmp_connect(station)}
{monitors}
  bmp stats interval 1000
  bmp mirror
 exit
exit
"""


def bmp_connect(station: tuple) -> str:
    return f"bmp connect {station[0]} port {station[1]} min-retry 100 max-retry 2000"


class FrrViews:
    """Source.on_change for FRR: both views "as if advertised back" (see the module
    docstring); denied routes are withdrawn from both views while live."""

    def __init__(self, model: Model):
        self.model = model

    @staticmethod
    def columns(peer: str, route: Route, tag: bool) -> tuple:
        values = dict(route.expect)
        if peer == SRC1:  # eBGP
            changes = {"as_path": (MON_AS,) + values["as_path"]}
        else:  # iBGP: reflected-route attributes
            changes = {"originator_id": SRC2, "cluster_list": (MON,)}
        return route.tagged(TAG, **changes) if tag else route.columns(**changes)

    def __call__(self, peer: str, route: Route, withdrawn: bool) -> None:
        denied = route.has_community(REJECT)
        if withdrawn or denied:
            pre = post = "W"
            key = ("adj_in_pre", peer, route.afi_safi, route.key)
            if denied and not withdrawn and key in self.model.present:
                self.model.set("adj_in_pre", peer, route, self.columns(peer, route, False))
        else:
            pre, post = self.columns(peer, route, False), self.columns(peer, route, True)
        self.model.set("adj_in_pre", peer, route, pre)
        self.model.set("adj_in_post", peer, route, post)

    def table_sync(self, peer: str, routes) -> None:
        """A new BMP session: pre-policy gets every route of the Adj-RIB-In."""
        for route in routes:
            self.model.set("adj_in_pre", peer, route, self.columns(peer, route, False))


@pytest.fixture(scope="module")
def lab_dsn(pg_server, pg_template):
    name = f"pybmpmon_e2e_frr_{os.getpid()}"
    pg_server.admin(f"DROP DATABASE IF EXISTS {name}",
                    f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield pg_server.dsn(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def lab(lab_dsn, tmp_path_factory):
    require(FRR_BGPD, VTYSH, "gobgpd", "gobgp")
    workdir = tmp_path_factory.mktemp("e2e-frr")
    procs = Processes()
    db = Db(lab_dsn)
    model = Model()
    snaps: dict = {"model": model, "timings": {}}
    started = time.monotonic()

    def state():
        return route_state(db, ROUTER_IP)

    def settle(phase: str, extra=lambda s: True) -> None:
        expected = dict(model.present)
        t0 = time.monotonic()
        try:
            wait_until(lambda: (lambda s: present(s) == expected and extra(s))(state()),
                       SETTLE, phase)
        except AssertionError:
            pass  # the tests report the difference
        snaps[phase] = {"state": state(), "expected": expected}
        snaps["timings"][phase] = round(time.monotonic() - t0, 2)

    try:
        collector = Collector(procs, workdir / "collector", lab_dsn)
        collector.start()
        snaps["collector"] = collector
        station = (collector.host, collector.port)
        bgp_port = free_port(MON)
        mon = Frr(procs, workdir, "mon", MON, bgp_port, bgpd_config(bgp_port, station))
        src1 = GoBgp(procs, workdir, "src1", SRC1, SRC1_AS, bgp_port)
        src2 = GoBgp(procs, workdir, "src2", SRC2, MON_AS, bgp_port)
        src1.add_neighbor(MON, MON_AS)
        src2.add_neighbor(MON, MON_AS)
        for daemon in (mon, src1, src2):
            daemon.start()
        wait_until(lambda: src1.established(MON) and src2.established(MON), 60,
                   "BGP sessions with bgpd", context=lambda: "\n".join(
                       (mon.vtysh("show bgp summary"), collector.tail())))
        snaps["timings"]["sessions_up"] = round(time.monotonic() - started, 1)
        wait_until(lambda: db.value("SELECT count(*) FROM bgp_peers WHERE state = 'up'") == 2,
                   SETTLE, "two Peer Up in bgp_peers", context=collector.tail)
        views = FrrViews(model)
        s1, s2 = Source(src1, views), Source(src2, views)

        for name, route in SRC1_ROUTES.items():
            s1.announce(name, route)
        for name, route in SRC2_ROUTES.items():
            s2.announce(name, route)
        settle("announced")

        for name, route in CHANGES_SRC1.items():
            s1.announce(name, route)
        for name, route in CHANGES_SRC2.items():
            s2.announce(name, route)
        for name in WITHDRAW_SRC1:
            s1.withdraw(name)
        for name in WITHDRAW_SRC2:
            s2.withdraw(name)
        settle("changed")
        wait_until(lambda: db.value("SELECT count(DISTINCT peer_ip) FROM stats_reports") >= 2,
                   SETTLE, "statistics reports for both peers", context=collector.tail)

        # Restart the BMP session (FRR closes the TCP connection, no Termination).
        mon.configure(f"router bgp {MON_AS}", "bmp targets e2e", "no " + bmp_connect(station))
        wait_until(lambda: db.value("SELECT NOT connected FROM routers WHERE router_ip = %s",
                                    (ROUTER_IP,)), SETTLE, "the router marked disconnected")
        settle("disconnected", lambda s: all(v["stale"] for v in s.values() if v["present"]))
        h = s1.withdraw("h")
        s1.announce("i", NEW_WHILE_DOWN)
        wait_until(lambda: NEW_WHILE_DOWN.key in mon.vtysh("show bgp ipv4 unicast")
                   and h.key not in mon.vtysh("show bgp ipv4 unicast"), SETTLE,
                   "bgpd to take the changes made while BMP was down")
        snaps["h"] = h
        mon.configure(f"router bgp {MON_AS}", "bmp targets e2e", bmp_connect(station))
        views.table_sync(SRC1, s1.routes.values())
        views.table_sync(SRC2, s2.routes.values())
        settle("reconnected", lambda s: not any(v["stale"] for v in s.values() if v["present"]))

        # src2 shut down on bgpd (local), src1 shuts its side (remote).
        mon.configure(f"router bgp {MON_AS}", f"neighbor {SRC2} shutdown")
        model.withdraw_peer(SRC2)
        src1.cli("neighbor", MON, "disable")
        model.withdraw_peer(SRC1)
        wait_until(lambda: db.value("SELECT count(*) FROM bgp_peers WHERE state = 'down'") == 2,
                   SETTLE, "two Peer Down in bgp_peers", context=collector.tail)
        settle("peers_down")

        snaps["history"] = history(db, ROUTER_IP, drop_leading_withdrawals=True)
        snaps["collector_exit"] = collector.stop()
        snaps["timings"]["total"] = round(time.monotonic() - started, 1)
        yield snaps
    finally:
        procs.stop_all()
        db.close()


def check_views(snap: dict) -> None:
    actual = present(snap["state"])
    assert actual == snap["expected"], "current_routes differ:\n" + diff(snap["expected"], actual)


def test_router_and_peer_up(lab, lab_dsn):
    """Initiation (sysName = hostname, sysDescr FRRouting) and both Peer Ups, with the
    neighbor description FRR sends as a Peer Up information TLV."""
    db = Db(lab_dsn)
    try:
        ((router, sys_name, sys_descr),) = db.rows(
            "SELECT host(router_ip), sys_name, sys_descr FROM routers")
        assert (router, sys_name) == (ROUTER_IP, HOSTNAME)
        assert sys_descr.startswith("FRRouting ")
        peers = db.rows(
            "SELECT host(peer_ip), peer_asn, host(peer_bgp_id), host(local_ip), local_asn, "
            "families, description FROM bgp_peers ORDER BY peer_ip")
        assert peers == [
            (SRC1, SRC1_AS, SRC1, MON, MON_AS, ["evpn", "ipv4_unicast", "ipv6_unicast"],
             "src1 eBGP"),
            (SRC2, MON_AS, SRC2, MON, MON_AS, ["evpn", "ipv4_unicast", "ipv6_unicast"],
             "src2 iBGP"),
        ]
        ups = db.rows("SELECT host(peer_ip), count(*) FROM peer_events WHERE event = 'peer_up' "
                      "GROUP BY 1 ORDER BY 1")
        assert ups == [(SRC1, 2), (SRC2, 2)]  # one per BMP session
    finally:
        db.close()


def test_announced_routes_per_view(lab):
    """Pre- and post-policy hold the accepted routes as FRR rebuilds them (post-policy
    tagged); denied routes are in neither while live."""
    snap = lab["announced"]
    check_views(snap)
    assert {k[0] for k in snap["expected"]} == set(VIEWS)
    assert {k[2] for k in snap["expected"]} == {"ipv4_unicast", "ipv6_unicast", "evpn"}
    denied = [k for k, v in snap["state"].items()
              if REJECT in (v["columns"][COLUMNS.index("communities")] or ())]
    assert [v for k, v in snap["state"].items() if k in denied and v["present"]] == []


def test_changes_and_withdrawals(lab):
    snap = lab["changed"]
    check_views(snap)
    state = snap["state"]
    for rib in VIEWS:
        assert not state[(rib, SRC1, "ipv4_unicast", "10.11.6.0/24")]["present"]  # g denied
        assert state[(rib, SRC1, "ipv4_unicast", "10.11.5.0/24")]["present"]  # f accepted


def test_disconnect_marks_routes_stale(lab):
    """FRR closes the connection without a Termination; every route stays, stale."""
    snap = lab["disconnected"]
    check_views(snap)
    assert [k for k, v in snap["state"].items() if v["present"] and not v["stale"]] == []
    assert lab["collector"].events("router_termination") == []


def test_reconnect_sweeps_what_was_not_reannounced(lab):
    """The new session's table sync re-announces every route (stale cleared; denied
    routes now in pre-policy, from the Adj-RIB-In) and its End-of-RIB sweeps h."""
    snap = lab["reconnected"]
    check_views(snap)
    state = snap["state"]
    h = lab["h"]
    for rib in VIEWS:
        row = state[(rib, SRC1, "ipv4_unicast", h.key)]
        assert not row["present"] and row["cause"] == "stale_sweep", (rib, row)
        assert state[(rib, SRC1, "ipv4_unicast", NEW_WHILE_DOWN.key)]["present"]
    assert [k for k, v in state.items() if v["present"] and v["stale"]] == []
    assert state[("adj_in_pre", SRC1, "ipv4_unicast", "10.11.1.0/24")]["present"]  # b, denied


def test_peer_down_withdraws_and_records_reason(lab, lab_dsn):
    """neighbor shutdown on bgpd: reason 2, FSM event 0; shutdown on the source: reason 3
    with Cease/Administrative Shutdown.  Both peers' routes leave both views."""
    snap = lab["peers_down"]
    check_views(snap)
    before = lab["reconnected"]["expected"]
    assert {snap["state"][k]["cause"] for k in before if k[0] == "adj_in_pre"} == {"peer_down"}
    db = Db(lab_dsn)
    try:
        peers = db.rows("SELECT host(peer_ip), state, last_down_code, last_down_reason "
                        "FROM bgp_peers ORDER BY peer_ip")
        assert [p[:3] for p in peers] == [(SRC1, "down", 3), (SRC2, "down", 2)]
        assert "6/2" in peers[0][3]
        # The last Peer Down of each peer (FRR also sends 2/0 at BMP connect for peers
        # not yet up, and may repeat a Peer Down).
        events = db.rows(
            "SELECT DISTINCT ON (peer_ip) host(peer_ip), reason_code, "
            "details->>'notification_code', details->>'notification_subcode', "
            "details->>'fsm_event' FROM peer_events WHERE event = 'peer_down' "
            "AND (details->>'routes_withdrawn')::int > 0 ORDER BY peer_ip, time DESC")
        assert events == [(SRC1, 3, "6", "2", None), (SRC2, 2, None, None, "0")]
    finally:
        db.close()


def test_history_holds_every_change(lab):
    """route_updates per route and view is the sequence of states the model predicts
    (withdrawals of never-announced, denied routes aside)."""
    expected = lab["model"].expected_history()
    actual = lab["history"]
    assert actual == expected, "route_updates differ:\n" + diff(expected, actual)


def test_statistics_reports(lab, lab_dsn):
    """FRR's counters (types 0, 2, 3, 4, 5, 11, 32-bit) and its private type 65531 are
    stored; rejected_by_policy counts the denied routes."""
    db = Db(lab_dsn)
    try:
        rows = db.rows("SELECT host(peer_ip), stat_type, max(value) FROM stats_reports "
                       "GROUP BY 1, 2 ORDER BY 1, 2")
    finally:
        db.close()
    types = {}
    for peer, stat_type, value in rows:
        types.setdefault(peer, {})[stat_type] = value
    assert set(types) == {SRC1, SRC2}
    for peer, values in types.items():
        assert {0, 2, 3, 4, 5, 11, 65531} <= set(values), (peer, values)
    # b, f, b6 denied at first, g later: src1's rejected-prefix counter saw some.
    assert types[SRC1][0] >= 1


def test_collector_clean(lab, lab_dsn):
    """No decode failure (Route Mirroring included), no ERROR log record, exit 0."""
    db = Db(lab_dsn)
    try:
        assert db.value("SELECT count(*) FROM decode_failures") == 0
    finally:
        db.close()
    collector = lab["collector"]
    assert [r for r in collector.records() if r.get("level") in ("ERROR", "CRITICAL")] == []
    assert lab["collector_exit"] == 0
    print("phase timings (s):", lab["timings"])
