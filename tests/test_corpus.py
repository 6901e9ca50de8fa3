"""The real captures in ../shared/corpus decode exactly as their manifests say.

Each ``<name>.bmp`` is a raw BMP stream recorded from GoBGP 3.10 or FRR 8.4 (see
../shared/SENDERS.md); ``<name>.json`` lists every route the two route sources
announced, withdrew and re-announced (``routes``, with ``expected_on_wire``),
plus counts taken from the stream by an independent decoder (``bmp_summary``)
and derived ``checks``.

Strategy: the manifest describes what the *sources* sent; what the monitored
router reports depends on the RIB view and on the sender's documented habits
(SENDERS.md).  Each habit is one small transformation below (FRR prepends its
AS on eBGP paths, sorts communities, ...), and for every view the sequence of
announcements and withdrawals of every route must then equal the transformed
source sequence exactly, attributes included.  A decoder that drops, invents,
reorders or misreads a single route or attribute fails here.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from pybmpmon.bgp.attributes import (
    as_path_text,
    format_community,
    format_ext_community,
    format_large_community,
)
from pybmpmon.bgp.model import Open, Update, family_name
from pybmpmon.bmp.framer import Framer
from pybmpmon.bmp.model import PeerDown, PeerUp, RouteMirroring, RouteMonitoring, StatisticsReport
from pybmpmon.iana import STAT_GAUGES, Origin, name_of
from pybmpmon.render import message_type, peer_flag_names
from pybmpmon.session import DecodeFailure, RouterSession


def _corpus_dir() -> Path:
    candidates = [
        os.environ.get("PYBMPMON_CORPUS"),
        Path(__file__).resolve().parents[2] / "shared" / "corpus",
    ]
    for candidate in candidates:
        if candidate and Path(candidate, ".").is_dir() and list(Path(candidate).glob("*.bmp")):
            return Path(candidate)
    # Not a skip: without the captures these tests would pass vacuously.
    raise RuntimeError("no BMP captures found: set PYBMPMON_CORPUS to the shared corpus directory")


CORPUS = _corpus_dir()
CAPTURES = sorted(path.stem for path in CORPUS.glob("*.bmp"))
SOURCES = ("src1", "src2")

# The lab's import policy on the monitored router (scenario_parameters says so in
# words; test_manifest_states_the_policy checks the words are still these).
REJECT_COMMUNITY = "65001:666"
ADDED_COMMUNITY = "65000:1"
BLACKHOLE = "65535:666"  # RFC 7999
NO_EXPORT = "65535:65281"  # RFC 1997

# bmp_summary names -> ours.
VIEW_NAMES = {"pre_policy": "adj_in_pre", "post_policy": "adj_in_post", "loc_rib": "loc_rib"}
STAT_NAMES = {
    "rejected_prefixes": 0,
    "duplicate_withdraws": 2,
    "invalid_cluster_list_loop": 3,
    "invalid_as_path_loop": 4,
    "invalid_originator_id": 5,
    "adj_rib_in_routes": 7,
    "loc_rib_routes": 8,
    "updates_treated_as_withdraw": 11,
    "prefixes_treated_as_withdraw": 12,
}
CAPABILITY_NAMES = {
    "multiprotocol": 1,
    "route_refresh": 2,
    "extended_nexthop": 5,
    "extended_message": 6,
    "graceful_restart": 64,
    "four_octet_as": 65,
    "add_path": 69,
    "enhanced_route_refresh": 70,
    "long_lived_gr": 71,
    "fqdn": 73,
    "route_refresh_old(cisco)": 128,
}
ADD_PATH_MODES = {"receive": 1, "send": 2, "both": 3}


def _family(name: str) -> str:
    return "evpn" if name == "l2vpn_evpn" else name


def _numbers(community: str) -> tuple:
    return tuple(int(part) for part in community.split(":"))


# -- decoding, once per capture ---------------------------------------------


@functools.lru_cache(maxsize=None)
def manifest(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text())


@functools.lru_cache(maxsize=None)
def decoded(name: str):
    """(events, bytes left in the framer) of a whole capture."""
    session = RouterSession()
    events = session.feed((CORPUS / f"{name}.bmp").read_bytes())
    return events, session.buffered


def _messages(name: str) -> list:
    return [event for event in decoded(name)[0] if type(event) is not DecodeFailure]


def _route_key(afi_safi: str, nlri) -> tuple:
    if nlri.evpn is None:
        return (afi_safi, nlri.prefix)
    evpn = nlri.evpn
    value = {1: evpn.esi, 2: (evpn.mac, evpn.ip), 3: evpn.ip, 4: evpn.esi, 5: nlri.prefix}[evpn.route_type]
    return (afi_safi, nlri.rd, evpn.route_type, evpn.ethernet_tag, value)


def _wire_attributes(attrs, route_set, nlri) -> dict:
    """An announced route as the manifests write it (``expected_on_wire``) and a bit more."""
    out = {"as_path": as_path_text(attrs.as_path)}
    if attrs.origin is not None:
        out["origin"] = name_of(Origin, attrs.origin)
    if route_set.next_hop is not None:
        out["next_hop"] = route_set.next_hop
    for name in ("med", "local_pref", "originator_id"):
        if getattr(attrs, name) is not None:
            out[name] = getattr(attrs, name)
    if attrs.cluster_list:
        out["cluster_list"] = list(attrs.cluster_list)
    if attrs.communities:
        out["communities"] = [format_community(c) for c in attrs.communities]
    if attrs.large_communities:
        out["large_communities"] = [format_large_community(c) for c in attrs.large_communities]
    if attrs.ext_communities:
        out["ext_communities"] = [format_ext_community(c) for c in attrs.ext_communities]
    out["unknown"] = [list(item) for item in attrs.unknown]
    out["labels"] = list(nlri.labels)
    return out


@functools.lru_cache(maxsize=None)
def observed(name: str) -> dict:
    """{(rib, peer address): {route key: [(action, attributes or None), ...]}} in stream order."""
    views: dict = defaultdict(lambda: defaultdict(list))
    for msg in _messages(name):
        if type(msg) is not RouteMonitoring:
            continue
        routes = views[(msg.peer.rib, str(msg.peer.address))]
        update = msg.update
        for route_set in update.withdrawn:
            for nlri in route_set.nlri:
                routes[_route_key(route_set.afi_safi, nlri)].append(("withdraw", None))
        for route_set in update.announced:
            for nlri in route_set.nlri:
                attrs = _wire_attributes(update.attributes, route_set, nlri)
                routes[_route_key(route_set.afi_safi, nlri)].append(("announce", attrs))
    return views


# -- what the sources sent ---------------------------------------------------


def _esi(text: str) -> str:
    """GoBGP's "AS <asn> <discriminator>" ESI: type 5 of RFC 7432 §5."""
    _, asn, discriminator = text.split()
    raw = b"\x05" + int(asn).to_bytes(4, "big") + int(discriminator).to_bytes(4, "big") + b"\x00"
    return ":".join(f"{byte:02x}" for byte in raw)


def _source_key(entry: dict) -> tuple:
    family = _family(entry["family"])
    if family != "evpn":
        return (family, entry["prefix"])
    kind = entry["evpn_type"]
    value = {
        1: lambda: _esi(entry["esi"]),
        2: lambda: (entry["mac"], entry["ip"]),
        3: lambda: entry["ip"],
        5: lambda: entry["ip_prefix"],
    }[kind]()
    return (family, entry["rd"], kind, entry["etag"], value)


def _pmsi(text: str) -> list:
    """ "ingress-repl label L tunnel A" as the PMSI_TUNNEL attribute (RFC 6514 §5) we keep raw."""
    words = text.split()
    assert words[0] == "ingress-repl" and words[1] == "label" and words[3] == "tunnel", text
    value = b"\x00\x06" + int(words[2]).to_bytes(3, "big") + socket.inet_aton(words[4])
    return [22, 0xC0, value.hex()]


def _as_sent(entry: dict) -> dict:
    """The source's announcement, in the shape of :func:`_wire_attributes`."""
    attrs = dict(entry["expected_on_wire"])
    attrs["unknown"] = [_pmsi(entry["pmsi"])] if "pmsi" in entry else []
    attrs["labels"] = [entry["label"]] if "label" in entry else []
    if _family(entry["family"]) == "evpn":
        # expected_on_wire leaves EVPN's origin and communities out.  The
        # sources (GoBGP) originate EVPN routes with ORIGIN incomplete and send
        # no encapsulation community with an Ethernet A-D route.
        attrs.setdefault("origin", "incomplete")
        ext = entry.get("ext_communities", [])
        if entry["evpn_type"] == 1:
            ext = [c for c in ext if c != "encap:vxlan"]
        if ext:
            attrs["ext_communities"] = ext
    return attrs


def _rejected(attrs: dict) -> bool:
    """The monitored router's import policy drops it (GoBGP also drops a loopback next hop)."""
    return REJECT_COMMUNITY in attrs.get("communities", ()) or attrs.get("next_hop", "").startswith("127.")


def source_sequences(name: str, source: str) -> dict:
    """{route key: [(action, entry)]}: what *source* did to each route, in order."""
    routes = manifest(name)["routes"]
    sequences: dict = defaultdict(list)
    for phase, action in (
        ("announce", "announce"),
        ("withdraw", "withdraw"),
        ("reannounce", "announce"),
    ):
        for entry in routes[phase].get(source, []):
            sequences[_source_key(entry)].append((action, entry))
    return sequences


# -- what each view of each sender shows (SENDERS.md) -----------------------


def gobgp_pre_policy(name, source, action, entry):
    """GoBGP's pre-policy view: the received UPDATE, verbatim."""
    if action == "withdraw":
        return [("withdraw", None)]
    return [("announce", _as_sent(entry))]


def gobgp_post_policy(name, source, action, entry):
    """GoBGP's post-policy view: rejected routes never appear, accepted ones gain the community."""
    if action == "withdraw":
        return [("withdraw", None)]
    attrs = _as_sent(entry)
    if _rejected(attrs):
        return []
    attrs["communities"] = attrs.get("communities", []) + [ADDED_COMMUNITY]
    return [("announce", attrs)]


def frr_view(post_policy: bool):
    """FRR's views: rebuilt from its RIB "as if advertised back" (SENDERS.md).

    eBGP paths gain the monitored AS, iBGP paths ORIGINATOR_ID and CLUSTER_LIST;
    communities and large communities come sorted; non-transitive extended
    communities (origin validation) are not sent over eBGP; EVPN NLRI carry
    label 0 (no local VNI); a route the import policy rejects is reported as a
    withdrawal.  Post-policy adds the policy's community, and NO_EXPORT to an
    eBGP route tagged BLACKHOLE (RFC 7999 §3.2).
    """

    def view(name, source, action, entry):
        if action == "withdraw":
            return [("withdraw", None)]
        attrs = _as_sent(entry)
        if REJECT_COMMUNITY in attrs.get("communities", ()):
            return [("withdraw", None)]
        topology = manifest(name)["topology"]
        ebgp = topology[source]["session"] == "eBGP"
        if ebgp:
            attrs["as_path"] = f"{topology['monitored_router']['as']} {attrs['as_path']}".strip()
            ext = [c for c in attrs.get("ext_communities", ()) if not c.startswith("origin_validation:")]
            attrs.pop("ext_communities", None)
            if ext:
                attrs["ext_communities"] = ext
        else:
            attrs["originator_id"] = topology[source]["address"]
            attrs["cluster_list"] = [topology["monitored_router"]["address"]]
        communities = list(attrs.get("communities", ()))
        if post_policy:
            communities.append(ADDED_COMMUNITY)
            if ebgp and BLACKHOLE in communities:
                communities.append(NO_EXPORT)
        if communities:
            attrs["communities"] = sorted(communities, key=_numbers)
        if "large_communities" in attrs:
            attrs["large_communities"] = sorted(attrs["large_communities"], key=_numbers)
        if attrs["labels"]:
            attrs["labels"] = [0]
        return [("announce", attrs)]

    return view


def frr_pre_policy_without_soft_reconfiguration(name, source, action, entry):
    """Without an Adj-RIB-In copy FRR cannot rebuild pre-policy routes: every change is a withdrawal."""
    return [("withdraw", None)]


def views_of(name: str) -> dict:
    """{rib: view function} that the capture's sender configuration produces."""
    sender = manifest(name)["sender"]
    config = sender["bmp_config"]
    if sender["software"].startswith("GoBGP"):
        policy = config["route-monitoring-policy"]
        views = {
            "pre-policy": ("adj_in_pre",),
            "post-policy": ("adj_in_post",),
            "local-rib": ("loc_rib",),
        }
        views.update(all=("adj_in_pre", "adj_in_post", "loc_rib"), both=())
        table = {"adj_in_pre": gobgp_pre_policy, "adj_in_post": gobgp_post_policy, "loc_rib": None}
        return {rib: table[rib] for rib in views[policy]}
    assert sender["software"].startswith("FRRouting"), sender
    pre = frr_view(False) if config["soft_reconfiguration_inbound"] else frr_pre_policy_without_soft_reconfiguration
    return {"adj_in_pre": pre, "adj_in_post": frr_view(True)}


def expected_view(name: str, source: str, view) -> dict:
    expected: dict = {}
    for key, steps in source_sequences(name, source).items():
        sequence = []
        for action, entry in steps:
            sequence.extend(view(name, source, action, entry))
        if sequence:
            expected[key] = sequence
    return expected


def _peer_address(name: str, source: str) -> str:
    return manifest(name)["checks"][source]["peer_address"]


def _diff(expected: dict, seen: dict) -> list:
    """Route keys whose sequences differ, with both sides, for a readable failure."""
    return [
        (key, expected.get(key), seen.get(key))
        for key in sorted(set(expected) | set(seen), key=repr)
        if expected.get(key) != seen.get(key)
    ]


# -- the tests ----------------------------------------------------------------


def test_the_corpus_is_there():
    assert len(CAPTURES) >= 7, CAPTURES


@pytest.mark.parametrize("name", CAPTURES)
def test_decodes_without_errors(name):
    events, left = decoded(name)
    summary = manifest(name)["bmp_summary"][0]
    failures = [event for event in events if type(event) is DecodeFailure]
    assert failures == []
    assert left == summary["trailing_bytes"] == 0
    assert len(events) == summary["messages_total"]


def test_manifest_states_the_policy():
    for name in CAPTURES:
        text = manifest(name)["scenario_parameters"]["import_policy_on_monitored_router"]
        assert f"reject routes carrying community {REJECT_COMMUNITY}" in text
        assert f"add community {ADDED_COMMUNITY}" in text


@pytest.mark.parametrize("name", CAPTURES)
def test_route_monitoring_views_are_the_configured_ones(name):
    seen = {rib for rib, _address in observed(name)}
    assert seen == set(views_of(name))
    by_view = manifest(name)["bmp_summary"][0]["route_monitoring_by_view"]
    assert {VIEW_NAMES[view] for view in by_view} == seen


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("source", SOURCES)
def test_adj_rib_in_routes_equal_the_manifest(name, source):
    views = {rib: view for rib, view in views_of(name).items() if view is not None}
    address = _peer_address(name, source)
    for rib, view in views.items():
        expected = expected_view(name, source, view)
        seen = observed(name).get((rib, address), {})
        assert _diff(expected, dict(seen)) == [], f"{rib} of {source}"
        assert expected, f"{rib} of {source} is empty: this check would be vacuous"


@pytest.mark.parametrize("name", [n for n in CAPTURES if "loc_rib" in views_of(n)])
def test_loc_rib_is_the_best_of_the_accepted_routes(name):
    """RFC 9069 Loc-RIB: each route is one of the accepted candidates; at the end, the best.

    GoBGP sends it as peer type 3 with address 0.0.0.0 and no Peer Up.  The
    candidates are the post-policy forms of every source's announcements; at
    the end of the capture each route is the highest-LOCAL_PREF live candidate
    (eBGP routes count as 100), and exactly the routes some source still
    announces are present.
    """
    candidates: dict = defaultdict(list)
    live: dict = defaultdict(list)
    for source in SOURCES:
        for key, sequence in expected_view(name, source, gobgp_post_policy).items():
            candidates[key].extend(attrs for action, attrs in sequence if action == "announce")
            if sequence[-1][0] == "announce":
                live[key].append(sequence[-1][1])
    loc_rib = observed(name)[("loc_rib", "0.0.0.0")]
    table: dict = {}
    for key, sequence in loc_rib.items():
        for action, attrs in sequence:
            if action == "announce":
                assert attrs in candidates[key], key
                table[key] = attrs
            else:
                assert key in table, f"withdrawal of {key} that the Loc-RIB did not hold"
                del table[key]
    assert set(table) == set(live)
    for key, attrs in table.items():
        best = max(a.get("local_pref", 100) for a in live[key])
        assert attrs in live[key] and attrs.get("local_pref", 100) == best, key
    assert len(table) > 10


@pytest.mark.parametrize("name", CAPTURES)
def test_post_policy_never_carries_the_reject_community(name):
    for (rib, _address), routes in observed(name).items():
        if rib == "adj_in_pre":
            continue
        for sequence in routes.values():
            for action, attrs in sequence:
                assert action == "withdraw" or REJECT_COMMUNITY not in attrs.get("communities", ())


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("source", SOURCES)
def test_checks(name, source):
    """The manifest's ``checks``, recomputed from our decoding of the capture."""
    checks = manifest(name)["checks"][source]
    sequences = source_sequences(name, source)
    unicast = {key for key in sequences if key[0] != "evpn"}
    announced = {key for key in unicast if any(action == "announce" for action, _ in sequences[key])}
    withdrawn = {key for key in unicast if any(action == "withdraw" for action, _ in sequences[key])}
    assert len(announced) == checks["announced_expected"]
    assert len(withdrawn) == checks["withdrawn_expected"]
    first_sent = {key: _as_sent(sequences[key][0][1]) for key in announced}
    rejected = {key for key in announced if REJECT_COMMUNITY in first_sent[key].get("communities", ())}
    assert len(rejected) == checks["rejected_by_import_policy"]
    martians = sorted(key[1] for key in announced if first_sent[key].get("next_hop", "").startswith("127."))
    assert martians == checks["martian_routes"]

    pre = observed(name).get(("adj_in_pre", checks["peer_address"]), {})
    first_seen = {}
    withdrawn_seen = set()
    for key, sequence in pre.items():
        announces = [attrs for action, attrs in sequence if action == "announce"]
        if announces and key in announced:
            first_seen[key] = announces[0]
        if any(action == "withdraw" for action, _ in sequence) and key in withdrawn:
            withdrawn_seen.add(key)
    assert len(first_seen) == checks["announced_seen_pre_policy"]
    missing = sorted(key[1] for key in announced - set(first_seen))
    assert missing[:20] == checks["announced_missing_pre_policy"]
    assert len(withdrawn_seen) == checks["withdrawn_seen_pre_policy"]
    assert len(first_seen) == checks["pre_policy_first_announcements_checked"]

    compared = ("as_path", "origin", "next_hop", "med", "local_pref")
    monitored_as = manifest(name)["topology"]["monitored_router"]["as"]
    mismatches = prefixed = 0
    for key, seen in first_seen.items():
        sent = first_sent[key]
        differs = any(seen.get(f) != sent.get(f) for f in compared) or any(
            set(seen.get(f, ())) - {NO_EXPORT} != set(sent.get(f, ())) for f in ("communities", "large_communities")
        )
        mismatches += differs
        prefixed += seen["as_path"].split(" ")[0] == str(monitored_as)
    assert mismatches == checks["pre_policy_attribute_mismatches"]
    assert prefixed == checks["pre_policy_as_path_prefixed_with_monitored_router_as"]
    for example in checks["pre_policy_attribute_mismatch_examples"]:
        key = next(k for k in first_seen if k[1] == example["prefix"])
        for field, (want, got) in example["diff(expected,seen)"].items():
            assert (first_sent[key][field], first_seen[key][field]) == (want, got)


# -- bmp_summary ----------------------------------------------------------------


def _peer_name(peer) -> str:
    return f"{name_of_peer_type(peer)}|{peer.distinguisher}|{peer.address}|{peer.asn}"


def name_of_peer_type(peer) -> str:
    return {0: "global", 1: "rd_instance", 2: "local_instance", 3: "loc_rib"}[peer.peer_type]


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_counts(name):
    summary = manifest(name)["bmp_summary"][0]
    messages = _messages(name)
    data = (CORPUS / f"{name}.bmp").read_bytes()
    assert len(data) == summary["bytes"]
    assert max(len(raw) for raw in Framer().feed(data)) == summary["largest_message_bytes"]
    assert dict(Counter(message_type(m) for m in messages)) == summary["messages_by_type"]

    by_view = Counter(m.peer.rib for m in messages if type(m) is RouteMonitoring)
    assert dict(by_view) == {VIEW_NAMES[v]: n for v, n in summary["route_monitoring_by_view"].items()}

    prefixes: dict = defaultdict(Counter)
    end_of_rib: dict = defaultdict(Counter)
    for m in messages:
        if type(m) is RouteMonitoring:
            for action, sets in (
                ("withdraw", m.update.withdrawn),
                ("announce", m.update.announced),
            ):
                for route_set in sets:
                    prefixes[m.peer.rib][f"{route_set.afi_safi}:{action}"] += len(route_set.nlri)
            if m.update.end_of_rib is not None:
                end_of_rib[m.peer.rib][m.update.end_of_rib] += 1
    want = {
        VIEW_NAMES[view]: {f"{_family(k.split(':')[0])}:{k.split(':')[1]}": n for k, n in counts.items()}
        for view, counts in summary["prefixes_by_view"].items()
    }
    assert {rib: dict(c) for rib, c in prefixes.items()} == want
    assert {rib: dict(c) for rib, c in end_of_rib.items()} == {
        VIEW_NAMES[v]: c for v, c in summary["end_of_rib_by_view"].items()
    }

    multi = sum(
        1
        for m in messages
        if type(m) is RouteMonitoring and sum(len(s.nlri) for s in m.update.announced + m.update.withdrawn) > 1
    )
    assert multi == summary["updates_with_more_than_one_prefix"]

    flags = Counter(
        f"{name_of_peer_type(m.peer)}:{''.join(peer_flag_names(m.peer.peer_type, m.peer.flags)) or '-'}"
        for m in messages
        if hasattr(m, "peer")
    )
    assert dict(flags) == summary["peer_header_flags_seen"]

    timestamps = [m.peer.timestamp for m in messages if hasattr(m, "peer")]
    assert sum(1 for t in timestamps if t == 0) == summary["timestamps"]["zero"]
    assert min(timestamps) == pytest.approx(summary["timestamps"]["min"], abs=1e-6)
    assert max(timestamps) == pytest.approx(summary["timestamps"]["max"], abs=1e-6)


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_peers(name):
    summary = manifest(name)["bmp_summary"][0]
    peers: dict = {}
    for m in _messages(name):
        peer = getattr(m, "peer", None)
        if peer is None:
            continue
        entry = peers.setdefault(
            (name_of_peer_type(peer), peer.distinguisher, str(peer.address), peer.asn),
            {"bgp_ids": set(), "flags": set(), "msgs": Counter()},
        )
        entry["bgp_ids"].add(str(peer.bgp_id))
        entry["flags"].add("".join(peer_flag_names(peer.peer_type, peer.flags)) or "-")
        entry["msgs"][message_type(m)] += 1
    want = {
        (p["peer_type"], p["rd"], p["address"], p["as"]): {
            "bgp_ids": set(p["bgp_ids_seen"]),
            "flags": set(p["flags_seen"]),
            "msgs": Counter(p["msgs"]),
        }
        for p in summary["peers"]
    }
    assert peers == want


def _open_summary(msg: Open) -> dict:
    return {
        "version": msg.version,
        "my_as": msg.my_as,
        "as4": msg.asn,
        "hold_time": msg.hold_time,
        "bgp_id": str(msg.bgp_id),
        "capabilities": [cap.code for cap in msg.capabilities],
        "families": [family_name(afi, safi) for afi, safi in msg.families],
        "add_path": sorted((family_name(afi, safi), mode) for (afi, safi), mode in msg.add_path().items()),
    }


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_peer_up_and_down(name):
    summary = manifest(name)["bmp_summary"][0]
    messages = _messages(name)
    ups = [m for m in messages if type(m) is PeerUp]
    assert len(ups) == len(summary["peer_up"])
    for msg, want in zip(ups, summary["peer_up"]):
        assert _peer_name(msg.peer) == want["peer"]
        assert peer_flag_names(msg.peer.peer_type, msg.peer.flags) == want["flags"]
        assert (str(msg.local_address), msg.local_port, msg.remote_port) == (
            want["local_address"],
            want["local_port"],
            want["remote_port"],
        )
        assert msg.peer.timestamp == pytest.approx(want["ts"], abs=1e-6)
        assert [(t.type, t.value) for t in msg.info] == [(t["type"], t["value"]) for t in want["info_tlvs"]]
        for ours, theirs in (
            (msg.sent_open, want["sent_open"]),
            (msg.received_open, want["received_open"]),
        ):
            theirs = dict(theirs)
            theirs["capabilities"] = [CAPABILITY_NAMES[c] for c in theirs["capabilities"]]
            theirs["families"] = [_family(f) for f in theirs["families"]]
            theirs["add_path"] = sorted(
                (_family(a["family"]), ADD_PATH_MODES[a["send_receive"]]) for a in theirs["add_path"]
            )
            assert _open_summary(ours) == theirs

    downs = [m for m in messages if type(m) is PeerDown]
    assert len(downs) == len(summary["peer_down"])
    for msg, want in zip(downs, summary["peer_down"]):
        assert _peer_name(msg.peer) == want["peer"]
        assert msg.reason == want["reason"]
        assert msg.peer.timestamp == pytest.approx(want["ts"], abs=1e-6)
        assert msg.fsm_event == want.get("fsm_event")
        if "notification" in want:  # pragma: no cover - no capture has one yet
            assert (msg.notification.code, msg.notification.subcode) == tuple(want["notification"][:2])


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_statistics(name):
    summary = manifest(name)["bmp_summary"][0]
    reports = [m for m in _messages(name) if type(m) is StatisticsReport]
    assert len(reports) == summary["statistics_reports"]
    types = Counter()
    last: dict = defaultdict(dict)
    for report in reports:
        for stat in report.stats:
            types[stat.type] += 1
            last[_peer_name(report.peer)][stat.type] = stat.value
    want_types = {}
    for label, count in summary["stat_counter_types_seen"].items():
        number = int(label.split(":")[0])
        assert label.endswith("(len8)") == (number in STAT_GAUGES), label
        want_types[number] = count
    assert dict(types) == want_types
    want_last = {
        peer: {STAT_NAMES.get(k, int(k[4:]) if k.startswith("type") else k): v for k, v in values.items()}
        for peer, values in summary["stat_last_values_by_peer"].items()
    }
    assert dict(last) == want_last


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_initiation_termination_mirroring(name):
    summary = manifest(name)["bmp_summary"][0]
    messages = _messages(name)
    initiations = [[(t.type, t.value) for t in m.info] for m in messages if message_type(m) == "initiation"]
    assert initiations == [[(t["type"], t["value"]) for t in tlvs] for tlvs in summary["initiation"]]
    terminations = [m for m in messages if message_type(m) == "termination"]
    assert [[(t.type, t.value) for t in m.info] for m in terminations] == [
        [(t["type"], t["value"]) for t in tlvs] for tlvs in summary["termination"]
    ]
    for msg, tlvs in zip(terminations, summary["termination"]):
        assert msg.reason == next(t["value"] for t in tlvs if t["type"] == 1)

    mirrored = Counter()
    for m in messages:
        if type(m) is RouteMirroring:
            for tlv in m.tlvs:
                assert tlv.type == 0 and tlv.message is not None and tlv.error is None
                kind = 2 if isinstance(tlv.message, Update) else 1 if isinstance(tlv.message, Open) else None
                mirrored[f"tlv_bgp_message:bgp_type{kind}"] += 1
    assert dict(mirrored) == summary["route_mirroring"]


@pytest.mark.parametrize("name", CAPTURES)
def test_summary_path_attributes(name):
    """How many route monitoring messages carry each attribute (AS_PATH aside: an
    empty one and none decode alike, and iBGP sources send empty ones)."""
    seen = Counter()
    for m in _messages(name):
        if type(m) is not RouteMonitoring:
            continue
        attrs = m.update.attributes
        present = {
            "origin": attrs.origin is not None,
            "next_hop": attrs.next_hop is not None,
            "med": attrs.med is not None,
            "local_pref": attrs.local_pref is not None,
            "communities": bool(attrs.communities),
            "large_communities": bool(attrs.large_communities),
            "ext_communities": bool(attrs.ext_communities),
            "originator_id": attrs.originator_id is not None,
            "cluster_list": bool(attrs.cluster_list),
            "pmsi_tunnel": any(u[0] == 22 for u in attrs.unknown),
            "mp_reach": any(s.afi_safi != "ipv4_unicast" for s in m.update.announced),
            "mp_unreach": any(s.afi_safi != "ipv4_unicast" for s in m.update.withdrawn),
        }
        seen.update(k for k, v in present.items() if v)
        assert not attrs.discarded and all(u[0] == 22 for u in attrs.unknown)
    want = dict(manifest(name)["bmp_summary"][0]["path_attributes_seen"])
    want.pop("as_path", None)
    assert dict(seen) == want
