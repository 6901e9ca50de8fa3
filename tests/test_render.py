"""pybmpmon.render: decoded model objects -> JSON-ready dicts (``pybmpmon decode``).

Tables of (hand-built model object, expected dict).  Every rendered value must
also survive ``json.dumps`` unchanged.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address

import pytest

from pybmpmon.bgp.model import (
    EMPTY_ATTRIBUTES,
    Attributes,
    Capability,
    EvpnRoute,
    Keepalive,
    Nlri,
    Notification,
    Open,
    RouteRefresh,
    RouteSet,
    UnknownBgpMessage,
    Update,
)
from pybmpmon.bmp.model import (
    InfoTlv,
    Initiation,
    MirroredMessage,
    PeerDown,
    PeerHeader,
    PeerUp,
    RouteMirroring,
    RouteMonitoring,
    Stat,
    StatisticsReport,
    Termination,
)
from pybmpmon.errors import BgpError, ContentError, FramingError
from pybmpmon.render import (
    message_type,
    peer_flag_names,
    render_attributes,
    render_error,
    render_message,
    render_peer,
    shutdown_communication,
)


def peer(peer_type=0, flags=0, address="192.0.2.1", asn=65001, distinguisher="0", timestamp=1700000000.5):
    addr = IPv6Address(address) if ":" in address else IPv4Address(address)
    return PeerHeader(peer_type, flags, distinguisher, addr, asn, IPv4Address("10.0.0.1"), timestamp)


PEER = peer()
PEER_JSON = {
    "peer_type": "global",
    "flags": [],
    "distinguisher": "0",
    "address": "192.0.2.1",
    "asn": 65001,
    "bgp_id": "10.0.0.1",
    "timestamp": 1700000000.5,
}


def rendered(msg) -> dict:
    out = render_message(msg)
    assert json.loads(json.dumps(out)) == out
    return out


def v4(nlri, next_hop="192.0.2.254"):
    return RouteSet(1, 1, "ipv4_unicast", next_hop, tuple(nlri))


def monitoring(attributes=EMPTY_ATTRIBUTES, announced=(), withdrawn=(), end_of_rib=None, header=PEER):
    return RouteMonitoring(header, Update(attributes, tuple(announced), tuple(withdrawn), end_of_rib))


# -- per-peer header ---------------------------------------------------------


@pytest.mark.parametrize(
    "peer_type, flags, names",
    [
        (0, 0x00, []),
        (0, 0x80, ["V"]),
        (0, 0x40, ["L"]),
        (0, 0x20, ["A"]),
        (0, 0x10, ["O"]),
        (1, 0xF0, ["V", "L", "A", "O"]),
        (0, 0x41, ["L", "0x01"]),  # a bit no RFC defines is shown, not dropped
        (3, 0x80, ["F"]),  # RFC 9069 §4.2: for a Loc-RIB peer the top bit is F
        (3, 0x00, []),
        (3, 0x40, ["0x40"]),
    ],
)
def test_peer_flag_names(peer_type, flags, names):
    assert peer_flag_names(peer_type, flags) == names


@pytest.mark.parametrize(
    "header, fields",
    [
        (PEER, PEER_JSON),
        (
            peer(1, 0xC0, "2001:db8::1", 4200000000, "65000:100", 0.0),
            {
                "peer_type": "rd_instance",
                "flags": ["V", "L"],
                "distinguisher": "65000:100",
                "address": "2001:db8::1",
                "asn": 4200000000,
                "timestamp": 0.0,
            },
        ),
        (peer(2), {"peer_type": "local_instance"}),
        (peer(3, 0x80, "0.0.0.0"), {"peer_type": "loc_rib", "flags": ["F"], "address": "0.0.0.0"}),
        (peer(9), {"peer_type": "unknown_9"}),
    ],
)
def test_render_peer(header, fields):
    out = render_peer(header)
    assert set(out) == set(PEER_JSON)
    for name, value in fields.items():
        assert out[name] == value


# -- route monitoring ----------------------------------------------------------

FULL = Attributes(
    origin=1,
    as_path=((2, (65001, 65002)), (1, (3, 1))),
    next_hop="192.0.2.254",
    med=10,
    local_pref=200,
    atomic_aggregate=True,
    aggregator=(65010, "192.0.2.9"),
    communities=((65001, 1), (65535, 65281)),
    originator_id="10.9.9.9",
    cluster_list=("10.0.0.1", "10.0.0.2"),
    ext_communities=(bytes.fromhex("0002fde900000064"),),
    large_communities=((4200000001, 1, 2),),
    only_to_customer=65001,
    aigp=42,
    unknown=((99, 0xC0, "0102"),),
    discarded=("MULTI_EXIT_DISC of length 3 discarded",),
)


@pytest.mark.parametrize(
    "attributes, expected",
    [
        (EMPTY_ATTRIBUTES, {}),
        (Attributes(origin=0), {"origin": "igp"}),
        (Attributes(origin=2, as_path=((2, ()),)), {"origin": "incomplete", "as_path": []}),
        (Attributes(origin=7), {"origin": "unknown_7"}),
        (
            Attributes(med=0, local_pref=0),
            {"med": 0, "local_pref": 0},
        ),  # zero is a value, not absence
        (
            Attributes(as_path=((3, (64512,)), (4, (64513, 64514)), (2, (65001,)))),
            {"as_path": [{"confed_sequence": [64512]}, {"confed_set": [64513, 64514]}, 65001]},
        ),
        (
            FULL,
            {
                "origin": "egp",
                "as_path": [65001, 65002, [3, 1]],
                "next_hop": "192.0.2.254",
                "med": 10,
                "local_pref": 200,
                "atomic_aggregate": True,
                "aggregator": {"asn": 65010, "address": "192.0.2.9"},
                "communities": ["65001:1", "65535:65281"],
                "large_communities": ["4200000001:1:2"],
                "ext_communities": ["rt:65001:100"],
                "originator_id": "10.9.9.9",
                "cluster_list": ["10.0.0.1", "10.0.0.2"],
                "only_to_customer": 65001,
                "aigp": 42,
                "unknown": [{"type": 99, "flags": 0xC0, "hex": "0102"}],
                "discarded": ["MULTI_EXIT_DISC of length 3 discarded"],
            },
        ),
    ],
)
def test_render_attributes(attributes, expected):
    assert render_attributes(attributes) == expected


def test_route_monitoring_unicast():
    msg = monitoring(
        Attributes(origin=0, as_path=((2, (65001,)),), next_hop="192.0.2.254"),
        announced=[v4([Nlri("10.0.0.0/8"), Nlri("10.1.0.0/16", path_id=7)])],
        withdrawn=[v4([Nlri("10.2.0.0/16")], next_hop=None)],
        header=peer(0, 0x40),
    )
    out = rendered(msg)
    assert list(out) == ["type", "peer", "rib", "attributes", "routes"]
    assert out["type"] == "route_monitoring"
    assert out["rib"] == "adj_in_post"
    assert out["peer"]["flags"] == ["L"]
    assert out["attributes"] == {"origin": "igp", "as_path": [65001], "next_hop": "192.0.2.254"}
    # Withdrawals come first, as in the UPDATE; only announcements have a next hop.
    assert out["routes"] == [
        {"action": "withdraw", "afi_safi": "ipv4_unicast", "prefix": "10.2.0.0/16"},
        {
            "action": "announce",
            "afi_safi": "ipv4_unicast",
            "prefix": "10.0.0.0/8",
            "next_hop": "192.0.2.254",
        },
        {
            "action": "announce",
            "afi_safi": "ipv4_unicast",
            "prefix": "10.1.0.0/16",
            "path_id": 7,
            "next_hop": "192.0.2.254",
        },
    ]
    assert "end_of_rib" not in out


@pytest.mark.parametrize(
    "flags, peer_type, rib",
    [
        (0x00, 0, "adj_in_pre"),
        (0x40, 0, "adj_in_post"),
        (0x10, 0, "adj_out_pre"),
        (0x50, 0, "adj_out_post"),
        (0, 3, "loc_rib"),
    ],
)
def test_route_monitoring_rib(flags, peer_type, rib):
    assert rendered(monitoring(header=peer(peer_type, flags)))["rib"] == rib


def test_route_monitoring_other_families():
    ipv6 = RouteSet(2, 1, "ipv6_unicast", "2001:db8::1", (Nlri("2001:db8:1::/48"),), "fe80::1")
    labeled = RouteSet(1, 4, "ipv4_labeled_unicast", "192.0.2.1", (Nlri("10.0.0.0/8", labels=(16, 17)),))
    vpn = RouteSet(
        2,
        128,
        "ipv6_vpn",
        "::ffff:192.0.2.1",
        (Nlri("2001:db8::/32", rd="192.0.2.1:7", labels=(100,)),),
    )
    evpn = RouteSet(
        25,
        70,
        "evpn",
        "192.0.2.10",
        (
            Nlri(
                None,
                rd="65000:1",
                labels=(10100,),
                evpn=EvpnRoute(2, "00:00:00:00:00:00:00:00:00:00", 0, "aa:bb:cc:00:00:01", "10.0.0.1"),
            ),
            Nlri(
                "10.200.0.0/24",
                rd="65000:2",
                labels=(10202,),
                evpn=EvpnRoute(5, ethernet_tag=0, gateway="0.0.0.0"),
            ),
            Nlri(None, rd="65000:3", evpn=EvpnRoute(9, raw=b"\x09\x01\x02")),
        ),
    )
    unknown = RouteSet(16388, 71, "afi16388_safi71", "192.0.2.1", (), raw=b"\x01\x02\x03")
    out = rendered(
        monitoring(
            announced=[ipv6, labeled, vpn, evpn, unknown],
            withdrawn=[RouteSet(1, 73, "afi1_safi73", None, (), raw=b"\xff")],
        )
    )
    assert out["routes"] == [
        {"action": "withdraw", "afi_safi": "afi1_safi73", "raw": "ff"},
        {
            "action": "announce",
            "afi_safi": "ipv6_unicast",
            "prefix": "2001:db8:1::/48",
            "next_hop": "2001:db8::1",
            "link_local_next_hop": "fe80::1",
        },
        {
            "action": "announce",
            "afi_safi": "ipv4_labeled_unicast",
            "prefix": "10.0.0.0/8",
            "labels": [16, 17],
            "next_hop": "192.0.2.1",
        },
        {
            "action": "announce",
            "afi_safi": "ipv6_vpn",
            "prefix": "2001:db8::/32",
            "rd": "192.0.2.1:7",
            "labels": [100],
            "next_hop": "::ffff:192.0.2.1",
        },
        {
            "action": "announce",
            "afi_safi": "evpn",
            "rd": "65000:1",
            "labels": [10100],
            "route_type": 2,
            "esi": "00:00:00:00:00:00:00:00:00:00",
            "ethernet_tag": 0,
            "mac": "aa:bb:cc:00:00:01",
            "ip": "10.0.0.1",
            "next_hop": "192.0.2.10",
        },
        {
            "action": "announce",
            "afi_safi": "evpn",
            "prefix": "10.200.0.0/24",
            "rd": "65000:2",
            "labels": [10202],
            "route_type": 5,
            "ethernet_tag": 0,
            "gateway": "0.0.0.0",
            "next_hop": "192.0.2.10",
        },
        {
            "action": "announce",
            "afi_safi": "evpn",
            "rd": "65000:3",
            "route_type": 9,
            "raw": "090102",
            "next_hop": "192.0.2.10",
        },
        {
            "action": "announce",
            "afi_safi": "afi16388_safi71",
            "raw": "010203",
            "next_hop": "192.0.2.1",
        },
    ]


@pytest.mark.parametrize("family", ["ipv4_unicast", "ipv6_unicast", "evpn"])
def test_end_of_rib(family):
    out = rendered(monitoring(end_of_rib=family))
    assert out["end_of_rib"] == family
    assert out["routes"] == [] and out["attributes"] == {}


# -- the other message types -----------------------------------------------------


def test_statistics_report():
    msg = StatisticsReport(
        PEER,
        (
            Stat(0, 12),
            Stat(7, 2**40),
            Stat(9, 300, 2, 1),
            Stat(10, 5, 25, 70),
            Stat(65531, b"\x00\x00\x00\x01"),
        ),
    )
    assert rendered(msg) == {
        "type": "statistics_report",
        "peer": PEER_JSON,
        "stats": [
            {"type": 0, "name": "rejected_by_policy", "value": 12},
            {"type": 7, "name": "adj_rib_in_routes", "value": 2**40},
            {
                "type": 9,
                "name": "per_afi_safi_adj_rib_in_routes",
                "afi_safi": "ipv6_unicast",
                "value": 300,
            },
            {"type": 10, "name": "per_afi_safi_loc_rib_routes", "afi_safi": "evpn", "value": 5},
            {"type": 65531, "name": "unknown_65531", "hex": "00000001"},
        ],
    }


@pytest.mark.parametrize(
    "msg, fields",
    [
        (
            PeerDown(PEER, 1, Notification(6, 2, b"\x05going")),
            {
                "reason": 1,
                "reason_name": "local_notification",
                "notification": {
                    "code": 6,
                    "subcode": 2,
                    "code_name": "cease",
                    "subcode_name": "administrative_shutdown",
                    "data": "05676f696e67",
                    "message": "going",
                },
            },
        ),
        (
            PeerDown(PEER, 3, Notification(4, 0)),
            {
                "reason": 3,
                "reason_name": "remote_notification",
                "notification": {
                    "code": 4,
                    "subcode": 0,
                    "code_name": "hold_timer_expired",
                    "data": "",
                },
            },
        ),
        (
            PeerDown(PEER, 3, Notification(6, 99, b"\x01")),
            {
                "reason": 3,
                "reason_name": "remote_notification",
                "notification": {
                    "code": 6,
                    "subcode": 99,
                    "code_name": "cease",
                    "subcode_name": "unknown_99",
                    "data": "01",
                },
            },
        ),
        (
            PeerDown(PEER, 2, fsm_event=0),
            {"reason": 2, "reason_name": "local_no_notification", "fsm_event": 0},
        ),
        (PeerDown(PEER, 4), {"reason": 4, "reason_name": "remote_no_notification"}),
        (
            PeerDown(PEER, 5, data=b"\x00\x03\x00\x01x"),
            {"reason": 5, "reason_name": "peer_de_configured", "data": "0003000178"},
        ),
        (PeerDown(PEER, 6), {"reason": 6, "reason_name": "local_system_closed"}),
        (PeerDown(PEER, 77), {"reason": 77, "reason_name": "unknown_77"}),
    ],
)
def test_peer_down(msg, fields):
    assert rendered(msg) == {"type": "peer_down", "peer": PEER_JSON, **fields}


@pytest.mark.parametrize(
    "data, text",
    [
        (b"", None),
        (b"\x00", None),
        (b"\x02hi", "hi"),
        (b"\x03hi", None),  # length says 3, 2 follow
        (b"\x02\xff\xfe", None),  # not UTF-8
        ("\x06caf\u00e9!".encode(), "caf\u00e9!"),
    ],
)
def test_shutdown_communication(data, text):
    assert shutdown_communication(data) == text


OPEN_SENT = Open(
    4,
    23456,
    180,
    "192.0.2.1",
    (
        Capability(1, b"\x00\x01\x00\x01", (1, 1)),
        Capability(1, b"\x00\x19\x00\x46", (25, 70)),
        Capability(65, b"\xfa\x56\xea\x00", 4200000000),
        Capability(69, b"\x00\x01\x01\x03", ((1, 1, 3),)),
        Capability(73, b"\x02rt\x00", ("rt", "")),
        Capability(5, b"\x00\x01\x00\x01\x00\x02", ((1, 1, 2),)),
        Capability(64, b"\x00\x78", {"restart_time": 120, "flags": 0, "families": ()}),
        Capability(2, b""),
        Capability(200, b"\xab"),
    ),
    ((3, b"\x01"),),
)
OPEN_RECEIVED = Open(
    4,
    65002,
    90,
    "192.0.2.2",
    (Capability(1, b"\x00\x01\x00\x01", (1, 1)), Capability(69, b"", ((1, 1, 1),))),
)


def test_peer_up():
    msg = PeerUp(
        PEER,
        IPv6Address("2001:db8::2"),
        179,
        40000,
        OPEN_SENT,
        OPEN_RECEIVED,
        (InfoTlv(0, "uplink"), InfoTlv(9, b"\x01")),
    )
    out = rendered(msg)
    assert {k: v for k, v in out.items() if k not in ("sent_open", "received_open")} == {
        "type": "peer_up",
        "peer": PEER_JSON,
        "local_address": "2001:db8::2",
        "local_port": 179,
        "remote_port": 40000,
        "info": [
            {"type": 0, "name": "string", "value": "uplink"},
            {"type": 9, "name": "unknown_9", "hex": "01"},
        ],
    }
    assert out["sent_open"] == {
        "version": 4,
        "my_as": 23456,
        "asn": 4200000000,
        "hold_time": 180,
        "bgp_id": "192.0.2.1",
        "capabilities": [
            {"code": 1, "name": "multiprotocol", "afi_safi": "ipv4_unicast"},
            {"code": 1, "name": "multiprotocol", "afi_safi": "evpn"},
            {"code": 65, "name": "four_octet_as", "asn": 4200000000},
            {
                "code": 69,
                "name": "add_path",
                "families": [{"afi_safi": "ipv4_unicast", "mode": "both"}],
            },
            {"code": 73, "name": "fqdn", "hostname": "rt", "domain": ""},
            {
                "code": 5,
                "name": "extended_next_hop",
                "families": [{"afi_safi": "ipv4_unicast", "next_hop_afi": 2}],
            },
            {
                "code": 64,
                "name": "graceful_restart",
                "value": {"restart_time": 120, "flags": 0, "families": []},
            },
            {"code": 2, "name": "route_refresh"},
            {"code": 200, "name": "unknown_200", "hex": "ab"},
        ],
        "families": ["ipv4_unicast", "evpn"],
        "add_path": [{"afi_safi": "ipv4_unicast", "mode": "both"}],
        "other_params": [{"type": 3, "hex": "01"}],
    }
    assert out["received_open"]["add_path"] == [{"afi_safi": "ipv4_unicast", "mode": "receive"}]
    assert out["received_open"]["asn"] == 65002
    assert "other_params" not in out["received_open"]


def test_initiation():
    msg = Initiation(
        (
            InfoTlv(1, "FRRouting 8.4.4"),
            InfoTlv(2, "rtr1"),
            InfoTlv(3, "vrf-a"),
            InfoTlv(0, "free text"),
        )
    )
    assert rendered(msg) == {
        "type": "initiation",
        "info": [
            {"type": 1, "name": "sys_descr", "value": "FRRouting 8.4.4"},
            {"type": 2, "name": "sys_name", "value": "rtr1"},
            {"type": 3, "name": "vrf_table_name", "value": "vrf-a"},
            {"type": 0, "name": "string", "value": "free text"},
        ],
    }


@pytest.mark.parametrize(
    "msg, expected",
    [
        (
            Termination((InfoTlv(1, 4),), 4),
            {
                "type": "termination",
                "info": [
                    {
                        "type": 1,
                        "name": "reason",
                        "value": 4,
                        "reason_name": "permanently_administratively_closed",
                    }
                ],
                "reason": 4,
                "reason_name": "permanently_administratively_closed",
            },
        ),
        (
            Termination((InfoTlv(0, "bye"), InfoTlv(1, 9)), 9),
            {
                "type": "termination",
                "info": [
                    {"type": 0, "name": "string", "value": "bye"},
                    {"type": 1, "name": "reason", "value": 9, "reason_name": "unknown_9"},
                ],
                "reason": 9,
                "reason_name": "unknown_9",
            },
        ),
        (Termination(()), {"type": "termination", "info": []}),
    ],
)
def test_termination(msg, expected):
    assert rendered(msg) == expected


def test_route_mirroring():
    update = Update(Attributes(origin=0), (v4([Nlri("10.0.0.0/8")]),), ())
    tlvs = (
        MirroredMessage(0, b"raw", update),
        MirroredMessage(0, b"raw", OPEN_RECEIVED),
        MirroredMessage(0, b"raw", Notification(6, 4)),
        MirroredMessage(0, b"raw", Keepalive()),
        MirroredMessage(0, b"raw", RouteRefresh(2, 1, 1)),
        MirroredMessage(0, b"raw", UnknownBgpMessage(9, b"\x01")),
        MirroredMessage(0, b"\xff\x00", None, error="BGP header marker is not all ones (offset 0)"),
        MirroredMessage(1, b"\x00\x01", code=1),
        MirroredMessage(1, b"\x00\x00", code=0),
        MirroredMessage(7, b"\x0a"),
    )
    out = rendered(RouteMirroring(PEER, tlvs))
    assert out["type"] == "route_mirroring" and out["peer"] == PEER_JSON
    assert out["tlvs"][0] == {
        "type": 0,
        "name": "bgp_message",
        "message": {
            "bgp_type": "update",
            "attributes": {"origin": "igp"},
            "routes": [
                {
                    "action": "announce",
                    "afi_safi": "ipv4_unicast",
                    "prefix": "10.0.0.0/8",
                    "next_hop": "192.0.2.254",
                }
            ],
        },
    }
    assert out["tlvs"][1]["message"]["bgp_type"] == "open"
    assert out["tlvs"][1]["message"]["bgp_id"] == "192.0.2.2"
    assert out["tlvs"][2]["message"] == {
        "bgp_type": "notification",
        "code": 6,
        "subcode": 4,
        "code_name": "cease",
        "subcode_name": "administrative_reset",
        "data": "",
    }
    assert out["tlvs"][3]["message"] == {"bgp_type": "keepalive"}
    assert out["tlvs"][4]["message"] == {
        "bgp_type": "route_refresh",
        "afi_safi": "ipv6_unicast",
        "subtype": 1,
    }
    assert out["tlvs"][5]["message"] == {"bgp_type": "unknown_9", "hex": "01"}
    assert out["tlvs"][6] == {
        "type": 0,
        "name": "bgp_message",
        "error": "BGP header marker is not all ones (offset 0)",
        "hex": "ff00",
    }
    assert out["tlvs"][7] == {
        "type": 1,
        "name": "information",
        "code": 1,
        "code_name": "messages_lost",
    }
    assert out["tlvs"][8] == {
        "type": 1,
        "name": "information",
        "code": 0,
        "code_name": "errored_pdu",
    }
    assert out["tlvs"][9] == {"type": 7, "name": "unknown_7", "hex": "0a"}


@pytest.mark.parametrize(
    "msg, name",
    [
        (monitoring(), "route_monitoring"),
        (StatisticsReport(PEER, ()), "statistics_report"),
        (PeerDown(PEER, 4), "peer_down"),
        (PeerUp(PEER, IPv4Address("192.0.2.9"), 1, 2, OPEN_RECEIVED, OPEN_RECEIVED), "peer_up"),
        (Initiation(()), "initiation"),
        (Termination(()), "termination"),
        (RouteMirroring(PEER, ()), "route_mirroring"),
    ],
)
def test_type_names(msg, name):
    assert message_type(msg) == name
    assert list(rendered(msg))[0] == "type"
    assert rendered(msg)["type"] == name


def test_not_a_message():
    with pytest.raises(TypeError):
        render_message(object())


# -- errors and the summary ---------------------------------------------------------


def test_render_error():
    out = render_error(
        ContentError("truncated per-peer header", 9),
        b"\x03\x00\x00\x00\x0a\x00\x01\x02\x03\x04",
        1234,
    )
    assert out == {
        "type": "error",
        "offset": 1234,
        "error": "truncated per-peer header (offset 9)",
        "error_type": "ContentError",
        "error_offset": 9,
        "hex": "030000000a0001020304",
    }
    bgp = render_error(BgpError("bad ORIGIN", 70, 3, 6), b"\x01", 0, PEER)
    assert (bgp["bgp_code"], bgp["bgp_subcode"], bgp["peer"]) == (3, 6, PEER_JSON)
    assert list(bgp)[-1] == "hex"
    framing = render_error(FramingError("BMP version 1, expected 3", 0), b"\x01", 6)
    assert framing["error_type"] == "FramingError" and "bgp_code" not in framing
    assert json.loads(json.dumps(bgp)) == bgp
