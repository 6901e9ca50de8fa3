"""Route semantics of the store against a real PostgreSQL (issue 3 §3).

Batches are built with rows.BatchBuilder and applied with database.Store in
the test's own thread: deterministic, no gevent involved (test_store_writer.py
covers the writer around them).
"""

from __future__ import annotations

import time

import psycopg2
import psycopg2.extras
import pytest

from pybmpmon.store.database import Store, setup_connection
from pybmpmon.store.pool import ConnectionPool
from pybmpmon.store.rows import BatchBuilder

ROUTER = "10.0.0.1"
NOW = time.time()


class Harness:
    def __init__(self, dsn):
        self.dsn = dsn
        self.pool = ConnectionPool(dsn, setup=setup_connection)
        self.store = Store(self.pool)
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def apply(self, *submissions, max_gen=8):
        """Each submission: a list of events (router ROUTER), or ("connect"|"disconnect", ip)."""
        builder = BatchBuilder(max_gen=max_gen)
        for sub in submissions:
            if isinstance(sub, tuple) and sub[0] == "connect":
                builder.add_connect(sub[1], sub[2] if len(sub) > 2 else None)
            elif isinstance(sub, tuple) and sub[0] == "disconnect":
                builder.add_disconnect(sub[1], sub[2] if len(sub) > 2 else None)
            elif isinstance(sub, tuple):
                builder.add_events(sub[0], sub[1], sub[2] if len(sub) > 2 else None)
            else:
                builder.add_events(ROUTER, sub)
        batch = builder.take()
        return self.store.apply(batch)

    def rows(self, query, *params):
        with self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def one(self, query, *params):
        rows = self.rows(query, *params)
        assert len(rows) == 1, rows
        return rows[0]

    def state(self, nlri, rib="adj_in_pre", peer_ip="192.0.2.1"):
        return self.one("SELECT * FROM route_state WHERE nlri = %s AND rib = %s AND "
                        "peer_ip = %s", nlri, rib, peer_ip)

    def close(self):
        self.conn.close()
        self.pool.close()


@pytest.fixture
def db(db_dsn):
    harness = Harness(db_dsn)
    yield harness
    harness.close()


def test_announce_creates_state_and_history(db, bmp_events):
    ev = bmp_events
    peer = ev.peer(timestamp=NOW - 5)
    attrs = ev.attrs(as_path=(65001, 4294967295, 65100), med=10, local_pref=200,
                     communities=((65001, 1), (65001, 2)), large=((4200000001, 1, 1),),
                     ext=(bytes.fromhex("0002fde900000001"),))
    db.apply([ev.announce(peer, ["203.0.113.0/24", "198.51.100.0/25"], attrs)])
    row = db.state("203.0.113.0/24")
    assert row["prefix"] == "203.0.113.0/24"
    assert row["as_path"] == [65001, 4294967295, 65100]
    assert row["origin_as"] == 65100
    assert row["origin"] == "igp"
    assert row["med"] == 10 and row["local_pref"] == 200
    assert row["communities"] == ["65001:1", "65001:2"]
    assert row["large_communities"] == ["4200000001:1:1"]
    assert row["ext_communities"] == ["rt:65001:1"]
    assert row["next_hop"] == "192.0.2.1"
    assert row["peer_asn"] == 65001
    assert (row["learn_count"], row["withdraw_count"], row["change_count"]) == (1, 0, 0)
    assert not row["is_withdrawn"] and not row["stale"]
    assert row["first_seen"] == row["last_seen"] == row["last_change"]
    assert abs(row["first_seen"].timestamp() - (NOW - 5)) < 0.001  # sane header time kept
    hist = db.rows("SELECT * FROM route_updates ORDER BY prefix")
    assert [h["prefix"] for h in hist] == ["198.51.100.0/25", "203.0.113.0/24"]
    assert all(not h["is_withdrawn"] and h["cause"] is None for h in hist)
    assert hist[1]["as_path"] == [65001, 4294967295, 65100]
    peers = db.rows("SELECT * FROM bgp_peers")
    assert len(peers) == 1 and peers[0]["state"] == "up" and peers[0]["peer_asn"] == 65001
    assert db.one("SELECT count(*) AS n FROM routers WHERE router_ip = %s", ROUTER)["n"] == 1


def test_zero_or_insane_timestamp_uses_receive_time(db, bmp_events):
    ev = bmp_events
    received = NOW
    db.apply((ROUTER, [ev.announce(ev.peer(timestamp=0.0), ["10.1.0.0/16"])], received))
    db.apply((ROUTER, [ev.announce(ev.peer(timestamp=1000.0), ["10.2.0.0/16"])], received))
    for prefix in ("10.1.0.0/16", "10.2.0.0/16"):
        assert abs(db.state(prefix)["first_seen"].timestamp() - received) < 0.001


def test_reannounce_same_and_changed_attributes(db, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    t0 = NOW - 100
    db.apply((ROUTER, [ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=1))], t0))
    db.apply((ROUTER, [ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=1))], t0 + 10))
    row = db.state("10.0.0.0/8")
    assert (row["learn_count"], row["change_count"]) == (2, 0)
    assert row["last_change"].timestamp() == pytest.approx(t0)
    assert row["last_seen"].timestamp() == pytest.approx(t0 + 10)
    db.apply((ROUTER, [ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=2))], t0 + 20))
    row = db.state("10.0.0.0/8")
    assert (row["learn_count"], row["change_count"], row["med"]) == (3, 1, 2)
    assert row["last_change"].timestamp() == pytest.approx(t0 + 20)
    assert row["first_seen"].timestamp() == pytest.approx(t0)


def test_withdraw_keeps_attributes(db, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    db.apply([ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=7))])
    db.apply([ev.withdraw(peer, ["10.0.0.0/8"])])
    row = db.state("10.0.0.0/8")
    assert row["is_withdrawn"] and row["med"] == 7 and row["as_path"] == [65001]
    assert (row["learn_count"], row["withdraw_count"], row["change_count"]) == (1, 1, 1)
    assert row["cause"] is None
    hist = db.rows("SELECT * FROM route_updates ORDER BY time, is_withdrawn")
    assert [h["is_withdrawn"] for h in hist] == [False, True]
    assert hist[1]["med"] is None and hist[1]["as_path"] is None
    assert db.rows("SELECT * FROM current_routes") == []
    # A withdrawal of an unknown route is recorded too (withdrawn from the start).
    db.apply([ev.withdraw(peer, ["172.16.0.0/12"])])
    row = db.state("172.16.0.0/12")
    assert row["is_withdrawn"] and (row["learn_count"], row["withdraw_count"]) == (0, 1)


def test_same_key_several_times_in_one_batch(db, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    a, b = ev.attrs(med=1), ev.attrs(med=2)
    db.apply([ev.announce(peer, ["10.0.0.0/8"], a), ev.withdraw(peer, ["10.0.0.0/8"]),
              ev.announce(peer, ["10.0.0.0/8"], b), ev.announce(peer, ["10.0.0.0/8"], b),
              ev.announce(peer, ["11.0.0.0/8"], a)])
    row = db.state("10.0.0.0/8")
    assert not row["is_withdrawn"] and row["med"] == 2
    assert (row["learn_count"], row["withdraw_count"], row["change_count"]) == (3, 1, 2)
    assert db.one("SELECT count(*) AS n FROM route_updates")["n"] == 5
    # Ends withdrawn: the attributes of the last announcement are kept.
    db.apply([ev.announce(peer, ["12.0.0.0/8"], a), ev.announce(peer, ["12.0.0.0/8"], b),
              ev.withdraw(peer, ["12.0.0.0/8"])])
    row = db.state("12.0.0.0/8")
    assert row["is_withdrawn"] and row["med"] == 2
    assert (row["learn_count"], row["withdraw_count"], row["change_count"]) == (2, 1, 2)


def test_new_keys_go_by_plain_insert_and_known_keys_fall_back(db, bmp_events):
    """First occurrences are tried as a plain INSERT; a known key among them
    rolls that back to the upsert, with nothing lost or counted twice."""
    ev = bmp_events
    peer = ev.peer()
    db.apply([ev.announce(peer, ["10.1.0.0/16", "10.2.0.0/16"], ev.attrs(med=1))])
    assert (db.store.fresh_attempts, db.store.fresh_failures) == (1, 0)
    # Two new keys around a known one (withdrawn here): the attempt meets
    # the known key after inserting 10.0.0.0/16, and is rolled back.
    db.apply([ev.announce(peer, ["10.0.0.0/16"], ev.attrs(med=2)),
              ev.withdraw(peer, ["10.1.0.0/16"]),
              ev.announce(peer, ["10.3.0.0/16"], ev.attrs(med=2))])
    assert (db.store.fresh_attempts, db.store.fresh_failures) == (2, 1)
    counts = {r["nlri"]: (r["learn_count"], r["withdraw_count"], r["is_withdrawn"], r["med"])
              for r in db.rows("SELECT * FROM route_state")}
    assert counts == {"10.0.0.0/16": (1, 0, False, 2), "10.1.0.0/16": (1, 1, True, 1),
                      "10.2.0.0/16": (1, 0, False, 1), "10.3.0.0/16": (1, 0, False, 2)}
    assert db.one("SELECT count(*) AS n FROM route_updates")["n"] == 5
    # After a failure the next segment goes straight to the upsert; the one
    # after tries again, and success resets the backoff.
    db.apply([ev.announce(peer, ["10.4.0.0/16"])])
    assert (db.store.fresh_attempts, db.store.fresh_failures) == (2, 1)
    for prefix in ("10.5.0.0/16", "10.6.0.0/16"):
        db.apply([ev.announce(peer, [prefix])])
    assert (db.store.fresh_attempts, db.store.fresh_failures) == (4, 1)
    assert db.one("SELECT count(*) AS n FROM route_state")["n"] == 7


def test_known_keys_back_off_the_plain_insert(db, bmp_events):
    """A steady flow of updates to known routes: attempts after 1, 2, 4 ... segments."""
    ev = bmp_events
    peer = ev.peer()
    db.apply([ev.announce(peer, ["10.0.0.0/8"])])
    attempts = []
    for med in range(12):
        before = db.store.fresh_attempts
        db.apply([ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=med))])
        attempts.append(db.store.fresh_attempts - before)
    assert attempts == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert db.store.fresh_failures == 4
    assert db.state("10.0.0.0/8")["learn_count"] == 13


@pytest.mark.parametrize("max_gen", [2, 8])
def test_long_flap_in_one_batch(db, bmp_events, max_gen):
    """More occurrences of one key than generations per segment: segments split."""
    ev = bmp_events
    peer = ev.peer()
    events = []
    for i in range(25):
        events.append(ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=i)))
        events.append(ev.withdraw(peer, ["10.0.0.0/8"]))
    events.append(ev.announce(peer, ["10.0.0.0/8"], ev.attrs(med=99)))
    db.apply(events, max_gen=max_gen)
    row = db.state("10.0.0.0/8")
    assert not row["is_withdrawn"] and row["med"] == 99
    assert (row["learn_count"], row["withdraw_count"]) == (26, 25)
    assert row["change_count"] == 50
    assert db.one("SELECT count(*) AS n FROM route_updates")["n"] == 51


def test_rib_views_are_separate_rows(db, bmp_events):
    ev = bmp_events
    pre, post = ev.peer(), ev.peer(post_policy=True)
    loc = ev.peer(address="0.0.0.0", asn=65000, peer_type=3, bgp_id="192.0.2.100")
    db.apply([ev.announce(pre, ["10.0.0.0/8"], ev.attrs(med=1)),
              ev.announce(post, ["10.0.0.0/8"], ev.attrs(med=2)),
              ev.announce(loc, ["10.0.0.0/8"], ev.attrs(med=3))])
    rows = db.rows("SELECT rib, med FROM current_routes ORDER BY rib")
    assert [(r["rib"], r["med"]) for r in rows] == [
        ("adj_in_post", 2), ("adj_in_pre", 1), ("loc_rib", 3)]
    db.apply([ev.withdraw(post, ["10.0.0.0/8"])])
    assert {r["rib"] for r in db.rows("SELECT rib FROM current_routes")} == {"adj_in_pre",
                                                                            "loc_rib"}
    peers = db.rows("SELECT peer_type, host(peer_ip) AS ip FROM bgp_peers ORDER BY peer_type")
    assert [(p["peer_type"], p["ip"]) for p in peers] == [(0, "192.0.2.1"), (3, "0.0.0.0")]


def test_ipv6_evpn_vpn_addpath(db, bmp_events):
    ev = bmp_events
    bgp = ev.bgp
    peer = ev.peer("2001:db8::1")
    evpn2 = bgp.Nlri(None, None, "65000:1", (100,),
                     bgp.EvpnRoute(2, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=0,
                                   mac="00:11:22:33:44:55", ip="192.0.2.50"))
    evpn5 = bgp.Nlri("10.10.0.0/16", None, "65000:1", (5000,),
                     bgp.EvpnRoute(5, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=0,
                                   gateway="0.0.0.0"))
    vpn = bgp.Nlri("10.20.0.0/16", None, "65000:7", (16001,))
    addpath = (bgp.Nlri("2001:db8:1::/48", 1), bgp.Nlri("2001:db8:1::/48", 2))
    db.apply([
        ev.announce(peer, [], family="evpn", next_hop="2001:db8::1", nlri=(evpn2, evpn5)),
        ev.announce(peer, [], family="ipv4_vpn", next_hop="192.0.2.1", nlri=(vpn,)),
        ev.announce(peer, [], family="ipv6_unicast", next_hop="2001:db8::1", nlri=addpath),
    ])
    rows = db.rows("SELECT * FROM route_state ORDER BY afi_safi, nlri, path_id")
    by_family = {}
    for r in rows:
        by_family.setdefault(r["afi_safi"], []).append(r)
    e2, e5 = by_family["evpn"]
    assert e2["nlri"].startswith("type2 65000:1") and e2["prefix"] is None
    assert e2["evpn_mac"] == "00:11:22:33:44:55" and e2["evpn_ip"] == "192.0.2.50"
    assert e2["labels"] == [100] and e2["rd"] == "65000:1" and e2["evpn_route_type"] == 2
    assert e5["prefix"] == "10.10.0.0/16" and e5["evpn_gateway"] == "0.0.0.0"
    (v,) = by_family["ipv4_vpn"]
    assert v["nlri"] == "65000:7 10.20.0.0/16" and v["labels"] == [16001]
    assert [r["path_id"] for r in by_family["ipv6_unicast"]] == [1, 2]
    assert by_family["ipv6_unicast"][0]["next_hop"] == "2001:db8::1"
    db.apply([ev.withdraw(peer, [], family="evpn", nlri=(evpn2,))])
    e2 = db.one("SELECT * FROM route_state WHERE evpn_route_type = 2")
    assert e2["is_withdrawn"] and e2["labels"] == [100] and e2["evpn_mac"] == "00:11:22:33:44:55"


def test_peer_down_withdraws_every_view_in_order(db, bmp_events):
    ev = bmp_events
    pre, post = ev.peer(), ev.peer(post_policy=True)
    other = ev.peer("192.0.2.2", asn=65002)
    db.apply([ev.peer_up(pre), ev.peer_up(other),
              ev.announce(pre, ["10.0.0.0/8", "11.0.0.0/8"]),
              ev.announce(post, ["10.0.0.0/8"]),
              ev.announce(other, ["10.0.0.0/8"]),
              ev.withdraw(pre, ["11.0.0.0/8"]),
              ev.peer_down(pre, reason=3, code=6, subcode=2),
              # routes after the Peer Down in the same batch (the session came back)
              ev.announce(pre, ["12.0.0.0/8"])])
    current = {(r["rib"], r["host"], r["nlri"]) for r in
               db.rows("SELECT rib, host(peer_ip), nlri FROM current_routes")}
    assert current == {("adj_in_pre", "192.0.2.2", "10.0.0.0/8"),
                       ("adj_in_pre", "192.0.2.1", "12.0.0.0/8")}
    down = db.state("10.0.0.0/8")
    assert down["is_withdrawn"] and down["cause"] == "peer_down" and down["withdraw_count"] == 1
    assert down["change_count"] == 0  # implied withdrawals are not churn
    event = db.one("SELECT * FROM peer_events WHERE event = 'peer_down'")
    assert event["reason_code"] == 3
    assert event["details"]["routes_withdrawn"] == 2
    assert event["details"]["notification_code"] == 6
    assert event["details"]["notification_subcode"] == 2
    peer = db.one("SELECT * FROM bgp_peers WHERE peer_ip = '192.0.2.1'")
    assert peer["state"] == "down" and peer["last_down_code"] == 3
    assert "remote_notification" in peer["last_down_reason"]
    implied = db.rows("SELECT * FROM route_updates WHERE cause = 'peer_down'")
    assert len(implied) == 2 and all(r["is_withdrawn"] for r in implied)
    # The route that returns after a Peer Down is not churn either.
    db.apply([ev.peer_up(pre), ev.announce(pre, ["10.0.0.0/8"])])
    back = db.state("10.0.0.0/8")
    assert not back["is_withdrawn"] and back["change_count"] == 0 and back["cause"] is None
    assert db.one("SELECT state FROM bgp_peers WHERE peer_ip = '192.0.2.1'")["state"] == "up"


def test_peer_up_details(db, bmp_events):
    ev = bmp_events
    bgp = ev.bgp
    peer = ev.peer(asn=4200000001)
    up = ev.bmp.PeerUp(peer, __import__("ipaddress").ip_address("192.0.2.100"), 179, 40001,
                       ev.open(65000, "192.0.2.100", 90),
                       ev.open(4200000001, "192.0.2.1", 30,
                               caps=(bgp.Capability(69, b"\x00\x01\x01\x03", ((1, 1, 3),)),)),
                       (ev.bmp.InfoTlv(0, "uplink\tto\nISP\x00"),))
    db.apply([up])
    row = db.one("SELECT * FROM bgp_peers")
    assert row["peer_asn"] == 4200000001 and row["state"] == "up"
    assert row["local_ip"] == "192.0.2.100" and row["local_port"] == 179
    assert row["remote_port"] == 40001 and row["hold_time"] == 30 and row["local_asn"] == 65000
    assert row["four_octet_as"] is True and row["families"] == ["ipv4_unicast"]
    assert row["add_path"] == ["ipv4_unicast:both"]
    assert row["description"] == "uplink\tto\nISP\ufffd"
    names = [c["name"] for c in row["capabilities"]["received"]]
    assert names == ["multiprotocol", "four_octet_as", "add_path"]
    event = db.one("SELECT * FROM peer_events")
    assert event["event"] == "peer_up" and event["peer_asn"] == 4200000001


def test_router_text_with_nul_tab_newline_backslash(db, bmp_events):
    ev = bmp_events
    nasty = "r1\t\\x\n\r\x00end"
    init = ev.bmp.Initiation((ev.bmp.InfoTlv(2, nasty), ev.bmp.InfoTlv(1, "descr\x00\\N"),
                              ev.bmp.InfoTlv(0, "free\ttext")))
    term = ev.bmp.Termination((ev.bmp.InfoTlv(0, "bye\x00\n"), ev.bmp.InfoTlv(1, 4)), 4)
    db.apply([init, term])
    row = db.one("SELECT * FROM routers")
    assert row["sys_name"] == "r1\t\\x\n\r\ufffdend"
    assert row["sys_descr"] == "descr\ufffd\\N"
    assert row["info"] == [{"type": 0, "value": "free\ttext"}]
    assert row["termination_reason"] == 4
    assert row["termination_info"] == "permanently_administratively_closed: bye\ufffd\n"


def test_stats_reports(db, bmp_events):
    ev = bmp_events
    stat = ev.bmp.Stat
    report = ev.bmp.StatisticsReport(ev.peer(), (
        stat(7, 290), stat(9, 12, 2, 1), stat(0, 3), stat(65531, b"\x01\x02"),
        stat(8, 2 ** 64 - 1)))
    db.apply([report])
    rows = db.rows("SELECT * FROM stats_reports ORDER BY stat_type")
    got = [(r["stat_type"], r["stat_name"], r["afi_safi"], r["value"], r["raw"]) for r in rows]
    assert got == [(0, "rejected_by_policy", None, 3, None),
                   (7, "adj_rib_in_routes", None, 290, None),
                   (8, "loc_rib_routes", None, None, str(2 ** 64 - 1)),
                   (9, "per_afi_safi_adj_rib_in_routes", "ipv6_unicast", 12, None),
                   (65531, "unknown_65531", None, None, "0102")]


def test_disconnect_marks_stale_and_end_of_rib_sweeps(db, bmp_events):
    ev = bmp_events
    pre, post = ev.peer(), ev.peer(post_policy=True)
    db.apply(("connect", ROUTER),
             [ev.announce(pre, ["10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"]),
              ev.announce(post, ["10.0.0.0/8", "11.0.0.0/8"]),
              ev.announce(pre, ["2001:db8::/32"], family="ipv6_unicast", next_hop="2001:db8::1"),
              ev.withdraw(pre, ["12.0.0.0/8"])])
    result = db.apply(("disconnect", ROUTER))
    assert result["stale_scopes"] == 3  # every view and family of the router
    assert db.one("SELECT connected FROM routers")["connected"] is False
    rows = db.rows("SELECT nlri, rib, stale FROM current_routes")
    assert len(rows) == 5 and all(r["stale"] for r in rows)
    # Reconnect: 10/8 re-announced pre-policy, End-of-RIB for pre-policy IPv4.
    result = db.apply(("connect", ROUTER), [ev.announce(pre, ["10.0.0.0/8"]),
                                            ev.end_of_rib(pre)])
    assert result["swept"] == 1
    assert db.one("SELECT connected FROM routers")["connected"] is True
    got = {(r["rib"], r["nlri"], r["stale"]) for r in
           db.rows("SELECT rib, nlri, stale FROM current_routes")}
    assert got == {("adj_in_pre", "10.0.0.0/8", False),
                   ("adj_in_post", "10.0.0.0/8", True), ("adj_in_post", "11.0.0.0/8", True),
                   ("adj_in_pre", "2001:db8::/32", True)}
    swept = db.state("11.0.0.0/8")
    assert swept["is_withdrawn"] and swept["cause"] == "stale_sweep" and not swept["stale"]
    assert db.one("SELECT count(*) AS n FROM route_updates WHERE cause = 'stale_sweep'")["n"] == 1
    # A second End-of-RIB finds nothing left to sweep (and does not scan).
    assert db.apply([ev.end_of_rib(pre)])["swept"] == 0


def test_batch_applied_once(db, bmp_events):
    ev = bmp_events
    builder = BatchBuilder()
    builder.add_events(ROUTER, [ev.announce(ev.peer(), ["10.0.0.0/8"])])
    batch = builder.take()
    assert db.store.apply(batch)["duplicate"] is False
    assert db.store.apply(batch)["duplicate"] is True  # e.g. a retry after a lost COMMIT ack
    assert db.state("10.0.0.0/8")["learn_count"] == 1


def test_decode_failure_kept(db, bmp_events):
    from pybmpmon.errors import ContentError
    from pybmpmon.session import DecodeFailure

    failure = DecodeFailure(ContentError("bad attribute\x00", 17), b"\x03" * 100, 0,
                            bmp_events.peer())
    db.apply([failure])
    row = db.one("SELECT * FROM decode_failures")
    assert row["error_type"] == "ContentError" and row["error"] == "bad attribute\ufffd"
    assert row["error_offset"] == 17 and row["raw_length"] == 100
    assert bytes(row["raw"]) == b"\x03" * 100 and row["peer_ip"] == "192.0.2.1"


def test_attribute_sets_are_sent_until_a_batch_holding_them_commits(db, bmp_events):
    ev = bmp_events
    peer = ev.peer()
    attrs = ev.attrs(as_path=(65001, 4200000010), communities=((65001, 7),), med=0)
    builder = BatchBuilder()

    def batch(prefix):
        builder.add_events(ROUTER, [ev.announce(peer, [prefix], attrs)])
        return builder.take()

    def attr_lines(b):
        return sum(len(part.attrs) for part in b.parts)

    first = batch("10.0.0.0/8")
    second = batch("11.0.0.0/8")  # built while the first is not committed: carries it too
    assert attr_lines(first) == attr_lines(second) == 1
    db.store.apply(first)
    builder.confirm(first)
    db.store.apply(second)
    builder.confirm(second)
    third = batch("12.0.0.0/8")
    assert attr_lines(third) == 0  # named by digest only
    db.store.apply(third)
    rows = db.rows("SELECT nlri, as_path, communities, med FROM current_routes ORDER BY nlri")
    assert [r["nlri"] for r in rows] == ["10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"]
    assert all(r["as_path"] == [65001, 4200000010] and r["communities"] == ["65001:7"]
               and r["med"] == 0 for r in rows)
    assert db.one("SELECT count(*) AS n FROM route_attrs")["n"] == 1
    # A withdrawal's history row has no attributes; the state keeps the last ones.
    db.apply([ev.withdraw(peer, ["12.0.0.0/8"])])
    assert db.one("SELECT as_path FROM route_updates WHERE is_withdrawn")["as_path"] is None
    assert db.state("12.0.0.0/8")["as_path"] == [65001, 4200000010]


def test_history_keeps_router_time_and_receive_time(db, bmp_events):
    """time: the per-peer header time when sane (a dumped route's learn time);
    received_at: when the collector read it, also for implied withdrawals."""
    ev = bmp_events
    learned = NOW - 3600
    peer = ev.peer(timestamp=learned)
    db.apply((ROUTER, [ev.announce(peer, ["10.0.0.0/8"])], NOW))
    db.apply((ROUTER, [ev.peer_down(ev.peer(timestamp=NOW + 5))], NOW + 10))
    rows = db.rows("SELECT is_withdrawn, cause, extract(epoch FROM time) AS t, "
                   "extract(epoch FROM received_at) AS r FROM route_updates ORDER BY t")
    assert [(r["is_withdrawn"], r["cause"]) for r in rows] == [(False, None),
                                                               (True, "peer_down")]
    announce, implied = rows
    assert abs(float(announce["t"]) - learned) < 0.01
    assert abs(float(announce["r"]) - NOW) < 0.01
    assert abs(float(implied["t"]) - (NOW + 5)) < 0.01
    assert abs(float(implied["r"]) - (NOW + 10)) < 0.01
    event = db.one("SELECT extract(epoch FROM time) AS t, extract(epoch FROM received_at) AS r "
                   "FROM peer_events WHERE event = 'peer_down'")
    assert abs(float(event["t"]) - (NOW + 5)) < 0.01
    assert abs(float(event["r"]) - (NOW + 10)) < 0.01


def test_apply_asks_its_hooks_and_rolls_back_when_told(db, bmp_events):
    """apply() copies the first segment, asks before_merge, merges, asks
    before_commit; a False from either rolls everything back ("superseded"),
    the batch claim included, so the batch applies later as if new."""
    ev = bmp_events
    peer = ev.peer()
    builder = BatchBuilder()
    builder.add_events(ROUTER, [ev.announce(peer, ["10.1.0.0/16", "10.2.0.0/16"])])
    batch = builder.take()
    asked = []

    def hook(name, answer):
        def ask():
            # Nothing is visible to others before the COMMIT.
            asked.append((name, "stage" in db.store.timings, "merge" in db.store.timings,
                          db.one("SELECT count(*) AS n FROM route_state")["n"]))
            return answer
        return ask

    result = db.store.apply(batch, hook("merge", False), hook("commit", True))
    assert result["superseded"] and asked == [("merge", True, False, 0)]
    result = db.store.apply(batch, hook("merge", True), hook("commit", False))
    assert result["superseded"] and asked[1:] == [("merge", True, False, 0),
                                                  ("commit", True, True, 0)]
    assert db.one("SELECT count(*) AS n FROM writer_batches")["n"] == 0
    result = db.store.apply(batch, hook("merge", True), hook("commit", True))
    assert not result["superseded"] and not result["duplicate"]
    assert db.one("SELECT count(*) AS n FROM route_state")["n"] == 2
    assert db.one("SELECT count(*) AS n FROM route_updates")["n"] == 2
    # The server drops the connection while apply() waits: it fails as for any
    # lost connection (the writer retries), and the retry gets a new one.
    builder.add_events(ROUTER, [ev.announce(peer, ["10.3.0.0/16"])])
    second = builder.take()

    def drop_it():
        with db.conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                        "AND state = 'idle in transaction'")
        return True

    with pytest.raises(psycopg2.OperationalError):
        db.store.apply(second, drop_it)
    db.store.apply(second)
    assert db.one("SELECT count(*) AS n FROM route_state")["n"] == 3
