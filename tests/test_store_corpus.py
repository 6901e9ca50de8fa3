"""Real captures replayed through RouterSession and the writer into PostgreSQL.

For every capture in ../shared/corpus: the stored history has exactly the
announcements and withdrawals per RIB view and family that the manifest's
independent decoder counted; peers, peer events, statistics and the router
row match the manifest; and current_routes per RIB view equals the state that
a plain in-memory replay of the same events gives (latest attributes, Peer
Down withdrawing every view of the peer).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from pybmpmon.bmp.model import PeerDown, PeerUp, RouteMonitoring
from pybmpmon.session import RouterSession
from pybmpmon.store.writer import Writer

ROUTER = "127.0.0.3"
VIEWS = {"pre_policy": "adj_in_pre", "post_policy": "adj_in_post", "loc_rib": "loc_rib"}
FAMILIES = {"l2vpn_evpn": "evpn"}


def _corpus() -> Path:
    for candidate in (os.environ.get("PYBMPMON_CORPUS"),
                      Path(__file__).resolve().parents[2] / "shared" / "corpus"):
        if candidate and list(Path(candidate).glob("*.bmp")):
            return Path(candidate)
    raise RuntimeError("no BMP captures: set PYBMPMON_CORPUS to the shared corpus directory")


CORPUS = _corpus()
CAPTURES = sorted(p.stem for p in CORPUS.glob("*.bmp"))


def decode(name):
    session = RouterSession()
    events = session.feed((CORPUS / f"{name}.bmp").read_bytes())
    assert session.error is None
    return events


def reference_state(events) -> dict:
    """key -> (next_hop, as_path) of present routes, by a plain replay."""
    state = {}
    for event in events:
        if isinstance(event, PeerDown):
            peer = (str(event.peer.address), event.peer.distinguisher)
            for key in [k for k in state if k[:2] == peer]:
                del state[key]
        if not isinstance(event, RouteMonitoring):
            continue
        peer = event.peer
        base = (str(peer.address), peer.distinguisher, peer.rib)
        update = event.update
        for rs in update.withdrawn:
            for nlri in rs.nlri:
                state.pop(base + (rs.afi_safi, nlri.key, nlri.path_id or 0), None)
        attrs = update.attributes
        path = [asn for _seg, asns in attrs.as_path for asn in asns]
        for rs in update.announced:
            for nlri in rs.nlri:
                state[base + (rs.afi_safi, nlri.key, nlri.path_id or 0)] = (
                    rs.next_hop or attrs.next_hop, path)
    return state


def query(dsn, sql, *params):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_through_writer(name, db_dsn):
    manifest = json.loads((CORPUS / f"{name}.json").read_text())
    summary = manifest["bmp_summary"][0]
    events = decode(name)
    writer = Writer(db_dsn, batch_size=100, batch_timeout=0.1)
    writer.start()
    try:
        writer.router_connected(ROUTER, summary["timestamps"]["min"])
        clock = summary["timestamps"]["min"]
        for start in range(0, len(events), 37):  # awkward chunks, several batches
            chunk = events[start:start + 37]
            for event in chunk:
                stamp = getattr(getattr(event, "peer", None), "timestamp", 0.0)
                clock = max(clock, stamp or 0.0)
            writer.submit(ROUTER, chunk, clock)
        assert writer.flush(timeout=120)
    finally:
        assert writer.stop(timeout=60)
    assert writer.stats["dropped_routes"] == 0

    # History: every prefix announced or withdrawn, per view and family.
    expected = Counter()
    for view, counts in summary["prefixes_by_view"].items():
        for key, count in counts.items():
            family, action = key.split(":")
            expected[(VIEWS[view], FAMILIES.get(family, family), action == "withdraw")] = count
    got = Counter({(rib, fam, w): n for rib, fam, w, n in query(
        db_dsn, "SELECT rib, afi_safi, is_withdrawn, count(*) FROM route_updates "
                "WHERE cause IS NULL GROUP BY 1, 2, 3")})
    assert got == expected

    # Current state per view equals the in-memory replay.
    reference = reference_state(events)
    rows = query(db_dsn, "SELECT host(peer_ip), peer_rd, rib, afi_safi, nlri, path_id, "
                         "host(next_hop), as_path FROM current_routes")
    stored = {tuple(r[:6]): (r[6], r[7]) for r in rows}
    assert len(rows) == len(stored)
    assert set(stored) == set(reference)
    assert stored == reference
    per_view = Counter(key[2] for key in reference)
    assert Counter(r for (r,) in query(db_dsn, "SELECT rib FROM current_routes")) == per_view

    # Peers, peer events, statistics, router.
    peers = query(db_dsn, "SELECT host(peer_ip), peer_asn, state FROM bgp_peers")
    assert sorted((ip, asn) for ip, asn, _ in peers) == sorted(
        (p["address"], p["as"]) for p in summary["peers"])
    last_state = {}  # FRR sends a Peer Down for each configured peer before its Peer Up
    for event in events:
        if isinstance(event, (PeerUp, PeerDown)):
            last_state[str(event.peer.address)] = "up" if isinstance(event, PeerUp) else "down"
    for ip, _, state in peers:
        assert state == last_state.get(ip, "up"), ip
    events_by_kind = dict(query(db_dsn, "SELECT event, count(*) FROM peer_events GROUP BY 1"))
    assert events_by_kind.get("peer_up", 0) == summary["messages_by_type"].get("peer_up", 0)
    assert events_by_kind.get("peer_down", 0) == summary["messages_by_type"].get("peer_down", 0)
    assert query(db_dsn, "SELECT count(*) FROM stats_reports")[0][0] == \
        sum(summary["stat_counter_types_seen"].values())
    implied = query(db_dsn, "SELECT count(*) FROM route_updates WHERE cause = 'peer_down'")[0][0]
    recorded = query(db_dsn, "SELECT coalesce(sum((details->>'routes_withdrawn')::int), 0) "
                             "FROM peer_events WHERE event = 'peer_down'")[0][0]
    assert implied == recorded
    if summary["initiation"]:
        tlvs = {t["name"]: t["value"] for t in summary["initiation"][0]}
        row = query(db_dsn, "SELECT sys_name, sys_descr FROM routers")[0]
        assert row == (tlvs.get("sysName"), tlvs.get("sysDescr"))
    ups = [e for e in events if isinstance(e, PeerUp)]
    for up in ups:
        (asn,) = query(db_dsn, "SELECT local_asn FROM bgp_peers WHERE peer_ip = %s",
                       str(up.peer.address))[0]
        assert asn == up.sent_open.asn
