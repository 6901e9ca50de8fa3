"""End to end with GoBGP: real gobgpd routers, ``pybmpmon serve``, a real PostgreSQL.

Topology, on loopback only (as in the corpus captures, ../shared/SENDERS.md)::

    src1 gobgpd 127.0.0.2 AS 65001 --eBGP--+
                                           +--> mon gobgpd 127.0.0.3 AS 65000 --BMP--> pybmpmon
    src2 gobgpd 127.0.0.4 AS 65000 --iBGP--+      (route-monitoring-policy all:
                                                   pre-policy, post-policy, Loc-RIB)

mon's import policy rejects routes carrying community 65001:666 and adds
65000:1 to every other route.  The sources inject IPv4, IPv6 and EVPN
(types 1, 2, 3, 5) routes with varied attributes through the ``gobgp`` CLI,
then withdraw some and change some; mon's BMP session is restarted (``gobgp
bmp del``/``add``) with a withdrawal and a new route in between; finally one
peer is shut down on mon (local) and the other on its source (remote).

The scenario runs once (module fixture ``lab``) and keeps a snapshot of the
database after each phase, together with what the test expects: the routes
as the monitored router sees them, per RIB view.  Each test then checks one
aspect against those snapshots, so a failure says which.
"""

from __future__ import annotations

import os
import time

import pytest

from routers import (
    COLUMNS,
    Collector,
    Db,
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

MON, SRC1, SRC2 = "127.0.0.3", "127.0.0.2", "127.0.0.4"
MON_AS, SRC1_AS = 65000, 65001
LOC_RIB_PEER = "0.0.0.0"  # GoBGP's Loc-RIB instance peer (RFC 9069 peer type 3)
ROUTER_IP = "127.0.0.1"  # gobgpd connects to the station from the default source address
REJECT, TAG = "65001:666", "65000:1"
VIEWS = ("adj_in_pre", "adj_in_post", "loc_rib")
SETTLE = 30.0  # seconds for a change to reach the database (usually well under 2)


def ebgp(prefix: str, next_hop: str, **kw) -> Route:
    return unicast(prefix, next_hop, source_as=SRC1_AS, **kw)


def ibgp(prefix: str, next_hop: str, **kw) -> Route:
    return unicast(prefix, next_hop, **kw)


def evpn1(*args, **kw) -> Route:
    return evpn(*args, source_as=SRC1_AS, **kw)


RD100, RD101, RD102, RD104 = "192.0.2.1:100", "192.0.2.1:101", "192.0.2.1:102", "192.0.2.1:104"
# ESI type 5 (AS-based, RFC 7432 §5): AS 65001, local discriminator 100.
ESI_AS = "05:00:00:fd:e9:00:00:00:64:00"

SRC1_ROUTES = {
    "a": ebgp("10.1.0.0/24", "192.0.2.1", path=(65100, 65200), med=10,
              communities=("65001:1", "65001:2"), large=("4200000001:1:1",), rt=("65001:2",)),
    "b": ebgp("10.1.1.0/24", "192.0.2.2", origin="egp", path=(4200000001,),
              communities=("65001:1", REJECT)),
    "c": ebgp("10.1.2.0/25", "198.51.100.1", origin="incomplete",
              path=(65100, (65201, 65202)), aggregator="65100:192.0.2.9"),
    "d": ebgp("10.1.3.1/32", "192.0.2.1"),
    "e": ebgp("10.1.4.0/24", "192.0.2.1", med=40, communities=("65001:4",)),
    "f": ebgp("10.1.5.0/24", "192.0.2.1", communities=(REJECT,)),
    "g": ebgp("10.1.6.0/24", "192.0.2.1", communities=("65001:6",)),
    "h": ebgp("10.1.7.0/24", "192.0.2.1", large=("65001:7:7",)),
    "a6": ebgp("2001:db8:1::/48", "2001:db8::1", path=(65100,), communities=("65001:1",)),
    "b6": ebgp("2001:db8:1:100::/56", "2001:db8::2", communities=(REJECT,)),
    "c6": ebgp("2001:db8:1:200::/64", "2001:db8::1", origin="incomplete",
               large=("65001:2:3", "4200000002:4294967295:2")),
    "d6": ebgp("2001:db8:1:300::1/128", "2001:db8::1", origin="egp", med=5),
    "t1": evpn1(("a-d", "esi", "AS", "65001", "100", "etag", "0", "label", "10404", "rd", RD104),
                f"type1 {RD104} esi {ESI_AS} etag 0", "192.0.2.10", "65001:104"),
    "t2": evpn1(("macadv", "aa:bb:cc:00:00:01", "10.100.0.1", "etag", "0", "label", "10100",
                 "rd", RD100),
                f"type2 {RD100} etag 0 mac aa:bb:cc:00:00:01 ip 10.100.0.1", "192.0.2.10",
                "65001:100"),
    "t3": evpn1(("multicast", "192.0.2.100", "etag", "0", "rd", RD101),
                f"type3 {RD101} etag 0 ip 192.0.2.100", "192.0.2.11", "65001:101"),
    "t5": evpn1(("prefix", "10.200.0.0/24", "etag", "0", "label", "10202", "rd", RD102),
                f"type5 {RD102} etag 0 prefix 10.200.0.0/24", "192.0.2.12", "65001:102",
                extra=("router-mac", "aa:bb:cc:00:00:99"), ext=("router_mac:aa:bb:cc:00:00:99",)),
}
SRC2_ROUTES = {
    "s1": ibgp("10.2.0.0/24", "192.0.2.20", local_pref=200),
    "s2": ibgp("10.2.1.0/24", "192.0.2.21", local_pref=100, med=7, communities=("65002:1",)),
    "s3": ibgp("2001:db8:2::/48", "2001:db8::20", local_pref=150, origin="egp"),
}
# Phase 2: changed attributes (same NLRI).
CHANGES_SRC1 = {
    "e": ebgp("10.1.4.0/24", "192.0.2.2", path=(65500,), med=999,
              communities=("65001:4", "65001:999"), large=("65001:9:9",)),
    "f": ebgp("10.1.5.0/24", "192.0.2.1", communities=("65001:5",)),  # now accepted
    "g": ebgp("10.1.6.0/24", "192.0.2.1", communities=("65001:6", REJECT)),  # now rejected
    "d6": ebgp("2001:db8:1:300::1/128", "2001:db8::1", origin="egp", med=6),
    "t3": evpn1(("multicast", "192.0.2.100", "etag", "0", "rd", RD101),
                f"type3 {RD101} etag 0 ip 192.0.2.100", "192.0.2.12", "65001:1101"),
}
CHANGES_SRC2 = {"s1": ibgp("10.2.0.0/24", "192.0.2.20", local_pref=50)}
WITHDRAW_SRC1 = ("d", "c6", "t2")
WITHDRAW_SRC2 = ("s2",)
# While mon's BMP session is down: h withdrawn (to be swept), i announced.
NEW_WHILE_DOWN = ebgp("10.1.8.0/24", "192.0.2.1", path=(65100,))


# --- what GoBGP makes of it -----------------------------------------------------------------


class GoBgpViews:
    """Source.on_change: pre-policy is the route as received; post-policy and Loc-RIB
    hold it tagged, or not at all when the import policy rejects it (a route changed to
    be rejected is withdrawn from them).

    ``bmp_down``: mon's BMP session is down.  What is withdrawn meanwhile disappears
    from pre- and post-policy at the End-of-RIB of the next session's initial dump, but
    GoBGP sends no Loc-RIB End-of-RIB: such a route stays there, flagged stale.
    """

    def __init__(self, model: Model):
        self.model = model
        self.bmp_down = False

    def __call__(self, peer: str, route: Route, withdrawn: bool) -> None:
        if withdrawn:
            pre = post = "W"
        else:
            pre = route.columns()
            post = "W" if route.has_community(REJECT) else route.tagged(TAG)
        self.model.set("adj_in_pre", peer, route, pre)
        self.model.set("adj_in_post", peer, route, post)
        if not (withdrawn and self.bmp_down):
            self.model.set("loc_rib", LOC_RIB_PEER, route, post)

    def peer_down(self, peer: str, routes) -> None:
        self.model.withdraw_peer(peer)
        for route in routes:
            self.model.set("loc_rib", LOC_RIB_PEER, route, "W")


# --- the scenario --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_dsn(pg_server, pg_template):
    name = f"pybmpmon_e2e_gobgp_{os.getpid()}"
    pg_server.admin(f"DROP DATABASE IF EXISTS {name}",
                    f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield pg_server.dsn(name)
    pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def lab(lab_dsn, tmp_path_factory):
    require("gobgpd", "gobgp")
    workdir = tmp_path_factory.mktemp("e2e-gobgp")
    procs = Processes()
    db = Db(lab_dsn)
    model = Model()
    snaps: dict = {"model": model, "timings": {}}
    started = time.monotonic()

    def settle(phase: str, expected_views: dict, extra=lambda state: True) -> None:
        """Wait until the database shows ``expected_views`` (and ``extra``), then keep a
        snapshot; on timeout keep it anyway, for the tests to report the difference."""
        t0 = time.monotonic()
        try:
            wait_until(lambda: (lambda s: present(s) == expected_views and extra(s))(
                route_state(db, ROUTER_IP)), SETTLE, phase)
        except AssertionError:
            pass
        snaps[phase] = {"state": route_state(db, ROUTER_IP), "expected": dict(expected_views)}
        snaps["timings"][phase] = round(time.monotonic() - t0, 2)

    try:
        collector = Collector(procs, workdir / "collector", lab_dsn)
        collector.start()
        snaps["collector"] = collector
        bgp_port = free_port(MON)
        mon = GoBgp(procs, workdir, "mon", MON, MON_AS, bgp_port)
        src1 = GoBgp(procs, workdir, "src1", SRC1, SRC1_AS, bgp_port)
        src2 = GoBgp(procs, workdir, "src2", SRC2, MON_AS, bgp_port)
        mon.add_neighbor(SRC1, SRC1_AS)
        mon.add_neighbor(SRC2, MON_AS)
        src1.add_neighbor(MON, MON_AS)
        src2.add_neighbor(MON, MON_AS)
        mon.set_import_policy(REJECT, TAG)
        mon.add_bmp_server(collector.host, collector.port, "all", statistics_timeout=15,
                           sys_name="gobgp-e2e-mon")
        for daemon in (mon, src1, src2):
            daemon.start()
        wait_until(lambda: mon.established(SRC1, SRC2), 60, "BGP sessions on mon")
        snaps["timings"]["sessions_up"] = round(time.monotonic() - started, 1)
        wait_until(lambda: db.value("SELECT count(*) FROM bgp_peers WHERE state = 'up' "
                                    "AND peer_type = 0") == 2, SETTLE, "two Peer Up in bgp_peers")
        views = GoBgpViews(model)
        s1, s2 = Source(src1, views), Source(src2, views)

        # Phase 1: announce.
        for name, route in SRC1_ROUTES.items():
            s1.announce(name, route)
        for name, route in SRC2_ROUTES.items():
            s2.announce(name, route)
        settle("announced", dict(model.present))

        # Phase 2: change some, withdraw some.
        for name, route in CHANGES_SRC1.items():
            s1.announce(name, route)
        for name, route in CHANGES_SRC2.items():
            s2.announce(name, route)
        for name in WITHDRAW_SRC1:
            s1.withdraw(name)
        for name in WITHDRAW_SRC2:
            s2.withdraw(name)
        settle("changed", dict(model.present))

        # Statistics: GoBGP reports every statistics-timeout (15 s) per established peer.
        wait_until(lambda: db.value("SELECT count(DISTINCT peer_ip) FROM stats_reports") >= 2,
                   40, "statistics reports for both peers", context=collector.tail)

        # Phase 3: restart the BMP session; while it is down h goes and i comes.
        before_restart = dict(model.present)
        mon.cli("bmp", "del", f"{collector.host}:{collector.port}")
        wait_until(lambda: db.value("SELECT NOT connected FROM routers WHERE router_ip = %s",
                                    (ROUTER_IP,)), SETTLE, "the router marked disconnected")
        settle("disconnected", before_restart,
               lambda s: all(v["stale"] for v in s.values() if v["present"]))
        snaps["router_after_del"] = db.rows(
            "SELECT connected, termination_reason FROM routers WHERE router_ip = %s",
            (ROUTER_IP,))
        views.bmp_down = True
        h = s1.withdraw("h")
        s1.announce("i", NEW_WHILE_DOWN)
        wait_until(lambda: NEW_WHILE_DOWN.nlri[0] in mon.cli("global", "rib", "-a", "ipv4")
                   and h.nlri[0] not in mon.cli("global", "rib", "-a", "ipv4"), SETTLE,
                   "mon's RIB to take the changes made while BMP was down")
        snaps["h"] = h
        mon.cli("bmp", "add", f"{collector.host}:{collector.port}", "all")
        views.bmp_down = False
        # GoBGP sends no End-of-RIB for Loc-RIB: h stays there, flagged stale.
        settle("reconnected", dict(model.present),
               lambda s: not any(v["stale"] for k, v in s.items()
                                 if v["present"] and k[0] != "loc_rib"))

        # Phase 4: src2 shut down on mon (local), src1 shuts its side (remote).
        mon.cli("neighbor", SRC2, "disable")
        views.peer_down(SRC2, s2.routes.values())
        src1.cli("neighbor", MON, "disable")
        views.peer_down(SRC1, s1.routes.values())
        wait_until(lambda: db.value("SELECT count(*) FROM bgp_peers WHERE state = 'down'") == 2,
                   SETTLE, "two Peer Down in bgp_peers", context=collector.tail)
        settle("peers_down", dict(model.present))

        snaps["history"] = history(db, ROUTER_IP)
        snaps["collector_exit"] = collector.stop()
        snaps["timings"]["total"] = round(time.monotonic() - started, 1)
        yield snaps
    finally:
        procs.stop_all()
        db.close()


# --- the tests -----------------------------------------------------------------------------


def check_views(snap: dict) -> None:
    actual = present(snap["state"])
    assert actual == snap["expected"], "current_routes differ:\n" + diff(snap["expected"], actual)


def test_router_and_peer_up(lab, lab_dsn):
    """Initiation fills the router row; both Peer Ups fill bgp_peers (OPENs decoded)."""
    db = Db(lab_dsn)
    try:
        # The last Initiation wins: the station added by `gobgp bmp add` announces
        # GoBGP's defaults, the configured one the configured names.
        assert db.rows("SELECT host(router_ip), sys_name, sys_descr FROM routers") == [
            (ROUTER_IP, "GoBGP", "3.10.0")]
        initiations = [(r["sys_name"], r["sys_descr"])
                       for r in lab["collector"].events("router_initiation")]
        assert initiations == [("gobgp-e2e-mon", "gobgpd e2e test router mon"),
                               ("GoBGP", "3.10.0")]
        peers = db.rows(
            "SELECT host(peer_ip), peer_asn, host(peer_bgp_id), host(local_ip), local_asn, "
            "four_octet_as, families FROM bgp_peers WHERE peer_type = 0 ORDER BY peer_ip")
        assert peers == [
            (SRC1, SRC1_AS, SRC1, MON, MON_AS, True, ["evpn", "ipv4_unicast", "ipv6_unicast"]),
            (SRC2, MON_AS, SRC2, MON, MON_AS, True, ["evpn", "ipv4_unicast", "ipv6_unicast"]),
        ]
        # The Loc-RIB instance sends routes without a Peer Up.
        assert db.rows("SELECT peer_type, host(peer_ip) FROM bgp_peers WHERE peer_type = 3") \
            == [(3, LOC_RIB_PEER)]
        ups = db.rows("SELECT host(peer_ip), count(*) FROM peer_events WHERE event = 'peer_up' "
                      "GROUP BY 1 ORDER BY 1")
        # One Peer Up per peer for each BMP session (the restart sends them again).
        assert ups == [(SRC1, 2), (SRC2, 2)]
    finally:
        db.close()


def test_announced_routes_per_view(lab):
    """Pre-policy holds every route as received (eBGP path prefixed with 65001);
    post-policy and Loc-RIB hold the accepted ones with the 65000:1 tag."""
    snap = lab["announced"]
    check_views(snap)
    views = {k[0] for k in snap["expected"]}
    assert views == set(VIEWS)
    families = {k[2] for k in snap["expected"]}
    assert families == {"ipv4_unicast", "ipv6_unicast", "evpn"}
    rejected = [k for k in snap["expected"] if k[0] == "adj_in_pre"
                and REJECT in (snap["expected"][k][COLUMNS.index("communities")] or ())]
    assert len(rejected) == 3  # b, f, b6: in pre-policy only
    assert not any(v["stale"] for v in snap["state"].values())


def test_changes_and_withdrawals(lab):
    """Changed attributes replace the old ones; withdrawn routes leave current_routes;
    a route changed to carry the reject community leaves post-policy and Loc-RIB, one
    changed to lose it enters them."""
    snap = lab["changed"]
    check_views(snap)
    state = snap["state"]
    g_post = state[("adj_in_post", SRC1, "ipv4_unicast", "10.1.6.0/24")]
    assert not g_post["present"]
    assert ("adj_in_post", SRC1, "ipv4_unicast", "10.1.5.0/24") in snap["expected"]
    for key in [("adj_in_pre", SRC1, "ipv4_unicast", "10.1.3.1/32"),
                ("adj_in_pre", SRC2, "ipv4_unicast", "10.2.1.0/24")]:
        assert not state[key]["present"] and state[key]["cause"] is None


def test_disconnect_marks_routes_stale(lab):
    """gobgp bmp del: Termination, connection closed; every route stays, flagged stale."""
    snap = lab["disconnected"]
    check_views(snap)
    stale = [k for k, v in snap["state"].items() if v["present"] and not v["stale"]]
    assert stale == [], f"routes not flagged stale after the BMP session ended: {stale}"
    # RFC 7854 §4.5 reason 4: permanently administratively closed.
    assert lab["router_after_del"] == [(False, 4)]
    assert len(lab["collector"].events("router_termination")) == 1


def test_reconnect_sweeps_what_was_not_reannounced(lab):
    """gobgp bmp add: the initial dump re-announces every route (stale flag cleared)
    and its End-of-RIB sweeps h, withdrawn while the session was down; i, announced
    meanwhile, appears.  GoBGP sends no Loc-RIB End-of-RIB, so h stays in Loc-RIB
    flagged stale: shown, never as fresh."""
    snap = lab["reconnected"]
    check_views(snap)
    state = snap["state"]
    h = lab["h"]
    for rib in ("adj_in_pre", "adj_in_post"):
        row = state[(rib, SRC1, "ipv4_unicast", h.key)]
        assert not row["present"] and row["cause"] == "stale_sweep", (rib, row)
    loc_h = state[("loc_rib", LOC_RIB_PEER, "ipv4_unicast", h.key)]
    assert loc_h["stale"] or not loc_h["present"]
    fresh = [k for k, v in state.items() if v["present"] and v["stale"] and k[3] != h.key]
    assert fresh == [], f"re-announced routes still flagged stale: {fresh}"
    assert state[("adj_in_pre", SRC1, "ipv4_unicast", NEW_WHILE_DOWN.key)]["present"]


def test_peer_down_withdraws_and_records_reason(lab, lab_dsn):
    """Shutdown on the source: mon receives Cease/Administrative Shutdown, Peer Down
    reason 3 with that NOTIFICATION.  Shutdown on mon: reason 1 with the NOTIFICATION
    mon sent, or 4 (GoBGP races its own NOTIFICATION against the socket read and
    sometimes reports a read failure).  Both peers' routes leave every view; the
    Peer Down itself withdraws the pre-policy ones."""
    snap = lab["peers_down"]
    check_views(snap)
    state = snap["state"]
    before = lab["reconnected"]["expected"]
    causes = {state[k]["cause"] for k in before if k[0] == "adj_in_pre"}
    assert causes == {"peer_down"}
    db = Db(lab_dsn)
    try:
        peers = db.rows("SELECT host(peer_ip), state, last_down_code, last_down_reason "
                        "FROM bgp_peers WHERE peer_type = 0 ORDER BY peer_ip")
        assert [p[:2] for p in peers] == [(SRC1, "down"), (SRC2, "down")]
        assert peers[0][2] == 3 and "6/2" in peers[0][3], peers[0]
        assert peers[1][2] in (1, 4), peers[1]
        events = db.rows(
            "SELECT host(peer_ip), reason_code, details->>'notification_code', "
            "details->>'notification_subcode', (details->>'routes_withdrawn')::int "
            "FROM peer_events WHERE event = 'peer_down' ORDER BY peer_ip")
        assert [e[0] for e in events] == [SRC1, SRC2]
        assert events[0][1:4] == (3, "6", "2")
        expected_local = (1, "6", "2") if events[1][1] == 1 else (4, None, None)
        assert events[1][1:4] == expected_local
        for (peer, *_ignored, withdrawn) in events:
            pre = sum(1 for k in before if k[0] == "adj_in_pre" and k[1] == peer)
            post = sum(1 for k in before if k[0] == "adj_in_post" and k[1] == peer)
            assert pre <= withdrawn <= pre + post, (peer, withdrawn, pre, post)
    finally:
        db.close()


def test_history_holds_every_change(lab):
    """route_updates, per route and view, is the sequence of states the model
    predicts: announcements with their attributes, changes, withdrawals (by UPDATE,
    Peer Down or the End-of-RIB sweep)."""
    expected = lab["model"].expected_history()
    actual = lab["history"]
    assert actual == expected, "route_updates differ:\n" + diff(expected, actual)


def test_statistics_reports(lab, lab_dsn):
    """GoBGP's statistics (types 7 and 8: Adj-RIB-In and Loc-RIB routes, 64-bit gauges)
    are stored per peer."""
    db = Db(lab_dsn)
    try:
        rows = db.rows("SELECT host(peer_ip), stat_type, min(value), max(value) "
                       "FROM stats_reports GROUP BY 1, 2 ORDER BY 1, 2")
    finally:
        db.close()
    by_peer: dict = {}
    for peer, stat_type, low, high in rows:
        by_peer.setdefault(peer, set()).add(stat_type)
        assert low is not None and low >= 0
    assert set(by_peer) == {SRC1, SRC2}
    for peer, types in by_peer.items():
        assert {7, 8} <= types, (peer, types)
    # src1's Adj-RIB-In held at least its first 16 routes at some report.
    adj_in = [r for r in rows if r[0] == SRC1 and r[1] == 7]
    assert adj_in and adj_in[0][3] >= 1


def test_collector_clean(lab, lab_dsn):
    """No decode failure, no ERROR log record, and SIGTERM exits 0 after flushing."""
    db = Db(lab_dsn)
    try:
        assert db.value("SELECT count(*) FROM decode_failures") == 0
    finally:
        db.close()
    collector = lab["collector"]
    errors = [r for r in collector.records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert errors == []
    assert lab["collector_exit"] == 0
    print("phase timings (s):", lab["timings"])
    assert collector.events("pybmpmon_stopped")[-1]["flushed"] is True

