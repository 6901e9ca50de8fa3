"""BMP message decoding (pybmpmon.bmp.decode): byte tables and the real captures."""

import json
import random
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from pybmpmon.bgp.model import BgpContext, Capability, Keepalive, Notification, Open, Update
from pybmpmon.bmp.decode import decode_bmp, decode_peer_header
from pybmpmon.bmp.framer import Framer
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
from pybmpmon.errors import BgpError, ContentError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CAPTURES = sorted(CORPUS.glob("*.bmp"))


# --- builders ------------------------------------------------------------------


def bmp(msg_type: int, body: bytes) -> bytes:
    return struct.pack(">BIB", 3, 6 + len(body), msg_type) + body


def peer_header(
    peer_type=0,
    flags=0,
    rd=bytes(8),
    address="192.0.2.1",
    asn=65001,
    bgp_id="192.0.2.1",
    seconds=1700000000,
    micros=250000,
) -> bytes:
    addr = ip_address(address)
    packed = addr.packed if addr.version == 6 else bytes(12) + addr.packed
    return struct.pack(
        ">BB8s16sI4sII",
        peer_type,
        flags,
        rd,
        packed,
        asn,
        IPv4Address(bgp_id).packed,
        seconds,
        micros,
    )


def tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack(">HH", tlv_type, len(value)) + value


def bgp(msg_type: int, body: bytes) -> bytes:
    return b"\xff" * 16 + struct.pack(">HB", 19 + len(body), msg_type) + body


def cap(code: int, value: bytes = b"") -> bytes:
    return bytes([code, len(value)]) + value


def bgp_open(my_as: int, bgp_id: str, *capabilities: bytes, hold=90) -> bytes:
    block = b"".join(capabilities)
    params = bytes([2, len(block)]) + block if capabilities else b""
    return bgp(
        1, struct.pack(">BHH4sB", 4, my_as, hold, IPv4Address(bgp_id).packed, len(params)) + params
    )


def notification(code: int, subcode: int, data: bytes = b"") -> bytes:
    return bgp(3, bytes([code, subcode]) + data)


def stat(stat_type: int, value: bytes) -> bytes:
    return tlv(stat_type, value)


def stats_body(*stats: bytes, count=None) -> bytes:
    return struct.pack(">I", len(stats) if count is None else count) + b"".join(stats)


PEER = peer_header()
PEER_DECODED = PeerHeader(
    0, 0, "0", IPv4Address("192.0.2.1"), 65001, IPv4Address("192.0.2.1"), 1700000000.25
)
EOR = bgp(2, b"\x00\x00\x00\x00")


def no_context(peer):
    raise AssertionError("context_for must not be called for this message type")


def decode(msg: bytes):
    return decode_bmp(msg, no_context)


# --- per-peer header -----------------------------------------------------------------

PEER_HEADER_TABLE = [
    # (kwargs for peer_header, expected fields (type, flags, rd, address, asn, bgp_id, ts))
    ({}, (0, 0, "0", IPv4Address("192.0.2.1"), 65001, IPv4Address("192.0.2.1"), 1700000000.25)),
    (
        {"flags": 0x80, "address": "2001:db8::1"},
        (0, 0x80, "0", IPv6Address("2001:db8::1"), 65001, IPv4Address("192.0.2.1"), 1700000000.25),
    ),
    (
        {"flags": 0x40},
        (0, 0x40, "0", IPv4Address("192.0.2.1"), 65001, IPv4Address("192.0.2.1"), 1700000000.25),
    ),
    (
        {"flags": 0x20, "seconds": 0, "micros": 0},
        (0, 0x20, "0", IPv4Address("192.0.2.1"), 65001, IPv4Address("192.0.2.1"), 0.0),
    ),
    (
        {"flags": 0x50, "asn": 4200000000},
        (
            0,
            0x50,
            "0",
            IPv4Address("192.0.2.1"),
            4200000000,
            IPv4Address("192.0.2.1"),
            1700000000.25,
        ),
    ),
    (
        {"peer_type": 1, "rd": bytes.fromhex("0000fde8 00000064")},
        (
            1,
            0,
            "65000:100",
            IPv4Address("192.0.2.1"),
            65001,
            IPv4Address("192.0.2.1"),
            1700000000.25,
        ),
    ),
    (
        {"peer_type": 1, "rd": bytes.fromhex("0001c0000201 0007")},
        (
            1,
            0,
            "192.0.2.1:7",
            IPv4Address("192.0.2.1"),
            65001,
            IPv4Address("192.0.2.1"),
            1700000000.25,
        ),
    ),
    (
        {"peer_type": 2, "rd": bytes.fromhex("0002fa56ea00 0001")},
        (
            2,
            0,
            "4200000000:1",
            IPv4Address("192.0.2.1"),
            65001,
            IPv4Address("192.0.2.1"),
            1700000000.25,
        ),
    ),
    (
        {"peer_type": 1, "rd": bytes.fromhex("0007 010203040506")},
        (
            1,
            0,
            "type7:010203040506",
            IPv4Address("192.0.2.1"),
            65001,
            IPv4Address("192.0.2.1"),
            1700000000.25,
        ),
    ),
    # Loc-RIB (RFC 9069): zero address, 0x80 is the F flag, not V.
    (
        {"peer_type": 3, "flags": 0x80, "address": "0.0.0.0", "asn": 65000, "bgp_id": "127.0.0.3"},
        (3, 0x80, "0", IPv4Address("0.0.0.0"), 65000, IPv4Address("127.0.0.3"), 1700000000.25),
    ),
    (
        {"peer_type": 3, "address": "0.0.0.0", "seconds": 5, "micros": 1},
        (3, 0, "0", IPv4Address("0.0.0.0"), 65001, IPv4Address("192.0.2.1"), 5.000001),
    ),
    (
        {"peer_type": 5, "flags": 0x0F},
        (5, 0x0F, "0", IPv4Address("192.0.2.1"), 65001, IPv4Address("192.0.2.1"), 1700000000.25),
    ),
]


@pytest.mark.parametrize("kwargs, expected", PEER_HEADER_TABLE)
def test_peer_header(kwargs, expected):
    data = b"\xee\xee" + peer_header(**kwargs)
    assert tuple(decode_peer_header(data, 2)) == expected


def test_peer_header_ipv4_uses_the_last_four_bytes_only():
    data = bytearray(peer_header())
    data[2:14] = b"\x11" * 12  # garbage where an IPv4 peer has zeros
    assert decode_peer_header(bytes(data), 0).address == IPv4Address("192.0.2.1")


FLAG_TABLE = [
    # (peer type, flags, ipv6, post_policy, legacy_as_path, adj_rib_out, filtered, rib)
    (0, 0x00, False, False, False, False, False, "adj_in_pre"),
    (0, 0x40, False, True, False, False, False, "adj_in_post"),
    (0, 0x80, True, False, False, False, False, "adj_in_pre"),
    (0, 0x20, False, False, True, False, False, "adj_in_pre"),
    (0, 0x10, False, False, False, True, False, "adj_out_pre"),
    (1, 0x50, False, True, False, True, False, "adj_out_post"),
    (2, 0xF0, True, True, True, True, False, "adj_out_post"),
    (3, 0x80, True, False, False, False, True, "loc_rib"),
    (3, 0x00, False, False, False, False, False, "loc_rib"),
]


@pytest.mark.parametrize("peer_type, flags, ipv6, post, legacy, out, filtered, rib", FLAG_TABLE)
def test_peer_flags(peer_type, flags, ipv6, post, legacy, out, filtered, rib):
    address = "2001:db8::2" if flags & 0x80 and peer_type != 3 else "192.0.2.2"
    peer = decode_peer_header(peer_header(peer_type=peer_type, flags=flags, address=address), 0)
    assert (peer.post_policy, peer.legacy_as_path, peer.adj_rib_out, peer.filtered, peer.rib) == (
        post,
        legacy,
        out,
        filtered,
        rib,
    )
    assert peer.ipv6 == ipv6
    assert peer.address.version == (6 if ipv6 and peer_type != 3 else 4)


def test_truncated_peer_header():
    with pytest.raises(ContentError) as info:
        decode_peer_header(peer_header()[:41], 0)
    assert info.value.offset == 0


# --- common header ---------------------------------------------------------------------

COMMON_ERRORS = [
    # (message, offset)
    (b"", 0),
    (b"\x03\x00\x00\x00", 0),
    (struct.pack(">BIB", 2, 6, 4), 0),
    (struct.pack(">BIB", 3, 7, 4), 1),  # length field disagrees with the message
    (struct.pack(">BIB", 3, 6, 7), 5),  # unknown message type
    (struct.pack(">BIB", 3, 6, 255), 5),
]


@pytest.mark.parametrize("msg, offset", COMMON_ERRORS)
def test_common_header_errors(msg, offset):
    with pytest.raises(ContentError) as info:
        decode(msg)
    assert info.value.offset == offset


# --- route monitoring ------------------------------------------------------------------


def test_route_monitoring_end_of_rib():
    seen = []
    ctx = BgpContext()

    def context_for(peer):
        seen.append(peer)
        return ctx

    got = decode_bmp(bmp(0, PEER + EOR), context_for)
    assert type(got) is RouteMonitoring
    assert got.peer == PEER_DECODED and seen == [PEER_DECODED]
    assert type(got.update) is Update
    assert got.update.end_of_rib == "ipv4_unicast"


def test_route_monitoring_ipv4_announcement():
    attrs = bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 0]) + bytes([0x40, 3, 4, 192, 0, 2, 9])
    body = struct.pack(">H", 0) + struct.pack(">H", len(attrs)) + attrs + bytes([24, 198, 51, 100])
    got = decode_bmp(bmp(0, PEER + bgp(2, body)), lambda peer: BgpContext())
    (routes,) = got.update.announced
    assert routes.afi_safi == "ipv4_unicast"
    assert [n.prefix for n in routes.nlri] == ["198.51.100.0/24"]
    assert routes.next_hop == "192.0.2.9"


def test_route_monitoring_peer_cache_parses_each_peer_once():
    cache = {}
    first = decode_bmp(
        bmp(0, peer_header(seconds=10, micros=0) + EOR), lambda p: BgpContext(), cache
    )
    second = decode_bmp(
        bmp(0, peer_header(seconds=11, micros=500000) + EOR), lambda p: BgpContext(), cache
    )
    other = decode_bmp(
        bmp(0, peer_header(address="192.0.2.77") + EOR), lambda p: BgpContext(), cache
    )
    assert len(cache) == 2
    assert (first.peer.timestamp, second.peer.timestamp) == (10.0, 11.5)
    assert first.peer[:6] == second.peer[:6]
    assert other.peer.address == IPv4Address("192.0.2.77")
    assert type(second.peer) is PeerHeader
    assert second.peer.post_policy is False


def test_route_monitoring_with_and_without_cache_agree():
    msg = bmp(
        0,
        peer_header(
            peer_type=1, flags=0xC0, address="2001:db8::5", rd=bytes.fromhex("0000fde800000064")
        )
        + EOR,
    )
    assert decode_bmp(msg, lambda p: BgpContext(), {}) == decode_bmp(msg, lambda p: BgpContext())


ROUTE_MONITORING_ERRORS = [
    # (body after the common header, error offset, error class)
    (PEER[:41], 6, ContentError),
    (PEER, 48, BgpError),  # no BGP message at all
    (PEER + bgp(4, b""), 48, ContentError),  # a KEEPALIVE is not an UPDATE
    (PEER + EOR + b"\x00", 71, ContentError),  # bytes after the UPDATE
    (PEER + b"\xfe" + EOR[1:], 48, BgpError),  # bad marker
    (PEER + EOR[:-1], 64, BgpError),  # BGP length runs past the BMP message
]


@pytest.mark.parametrize("body, offset, error", ROUTE_MONITORING_ERRORS)
def test_route_monitoring_errors(body, offset, error):
    with pytest.raises(error) as info:
        decode_bmp(bmp(0, body), lambda p: BgpContext(), {})
    assert info.value.offset == offset


# --- statistics report -----------------------------------------------------------------

STATS_TABLE = [
    # (counter TLV, expected Stat)
    (stat(0, struct.pack(">I", 12)), Stat(0, 12)),
    (stat(1, struct.pack(">I", 0xFFFFFFFF)), Stat(1, 0xFFFFFFFF)),
    (stat(6, struct.pack(">I", 3)), Stat(6, 3)),
    (stat(11, struct.pack(">I", 31)), Stat(11, 31)),
    (stat(13, struct.pack(">I", 2)), Stat(13, 2)),
    (stat(7, struct.pack(">Q", 2**40 + 1)), Stat(7, 2**40 + 1)),
    (stat(8, struct.pack(">Q", 290)), Stat(8, 290)),
    (stat(14, struct.pack(">Q", 5)), Stat(14, 5)),
    (stat(15, struct.pack(">Q", 2**64 - 1)), Stat(15, 2**64 - 1)),
    (stat(9, struct.pack(">HBQ", 1, 1, 800000)), Stat(9, 800000, 1, 1)),
    (stat(10, struct.pack(">HBQ", 2, 1, 150000)), Stat(10, 150000, 2, 1)),
    (stat(16, struct.pack(">HBQ", 25, 70, 7)), Stat(16, 7, 25, 70)),
    (stat(17, struct.pack(">HBQ", 1, 128, 9)), Stat(17, 9, 1, 128)),
    # Real routers: FRR's private type 65531 (4 bytes), a 32-bit counter sent as 8.
    (stat(65531, struct.pack(">I", 0)), Stat(65531, 0)),
    (stat(0, struct.pack(">Q", 4)), Stat(0, 4)),
    (stat(7, struct.pack(">I", 22)), Stat(7, 22)),
    # Odd shapes stay raw.
    (stat(9, struct.pack(">HBI", 1, 1, 5)), Stat(9, b"\x00\x01\x01\x00\x00\x00\x05")),
    (stat(40000, b"\x01\x02\x03"), Stat(40000, b"\x01\x02\x03")),
    (stat(2, b""), Stat(2, b"")),
    (stat(30, struct.pack(">HBQ", 1, 1, 5)), Stat(30, struct.pack(">HBQ", 1, 1, 5))),
]


@pytest.mark.parametrize("counter, expected", STATS_TABLE)
def test_statistics_counter(counter, expected):
    got = decode(bmp(1, PEER + stats_body(counter)))
    assert got == StatisticsReport(PEER_DECODED, (expected,))


def test_statistics_report_with_many_counters():
    counters = [c for c, _ in STATS_TABLE]
    got = decode(bmp(1, PEER + stats_body(*counters)))
    assert got.stats == tuple(s for _, s in STATS_TABLE)


def test_statistics_report_without_counters():
    assert decode(bmp(1, PEER + stats_body())) == StatisticsReport(PEER_DECODED, ())


STATS_ERRORS = [
    # (body after the peer header, offset)
    (b"\x00\x00\x00", 48),  # count truncated
    (stats_body(stat(0, b"\x00\x00\x00\x01"), count=2), 60),  # fewer counters than counted
    (stats_body(count=0xFFFFFFFF), 52),
    (stats_body(stat(0, b"\x00\x00\x00\x01"))[:-1], 56),  # value overruns the message
    (stats_body(stat(0, b"\x00\x00\x00\x01")) + b"\x00", 60),  # more than counted
    (stats_body(count=1) + b"\x00\x07\x00", 54),  # truncated length
]


@pytest.mark.parametrize("body, offset", STATS_ERRORS)
def test_statistics_errors(body, offset):
    with pytest.raises(ContentError) as info:
        decode(bmp(1, PEER + body))
    assert info.value.offset == offset


# --- peer down -------------------------------------------------------------------------

PEER_DOWN_TABLE = [
    # (body after the peer header, expected PeerDown fields after the peer)
    (b"\x01" + notification(6, 2), (1, Notification(6, 2, b""), None, b"")),
    (
        b"\x01" + notification(6, 2, b"\x0bshutdown by"),
        (1, Notification(6, 2, b"\x0bshutdown by"), None, b""),
    ),
    (b"\x02\x00\x00", (2, None, 0, b"")),
    (b"\x02\x00\x1a", (2, None, 26, b"")),
    (b"\x03" + notification(4, 0), (3, Notification(4, 0, b""), None, b"")),
    (
        b"\x03" + notification(2, 2, b"\x00\x01") + b"xx",
        (3, Notification(2, 2, b"\x00\x01"), None, b"xx"),
    ),
    (b"\x04", (4, None, None, b"")),
    (b"\x05", (5, None, None, b"")),
    (b"\x05" + tlv(3, b"vrf-red"), (5, None, None, tlv(3, b"vrf-red"))),
    (b"\x06" + tlv(0, b"why"), (6, None, None, tlv(0, b"why"))),
    (b"\x63some data", (99, None, None, b"some data")),
]


@pytest.mark.parametrize("body, expected", PEER_DOWN_TABLE)
def test_peer_down(body, expected):
    assert decode(bmp(2, PEER + body)) == PeerDown(PEER_DECODED, *expected)


PEER_DOWN_ERRORS = [
    # (body after the peer header, offset)
    (b"", 48),  # reason missing
    (b"\x01", 49),  # no NOTIFICATION
    (b"\x01" + notification(6, 2)[:-1], 49),  # NOTIFICATION truncated
    (b"\x01" + bgp(3, b""), 68),  # no code/subcode
    (b"\x03" + bgp(4, b""), 67),  # not a NOTIFICATION
    (b"\x03" + b"\x00" + notification(6, 2)[1:], 49),  # bad marker
    (b"\x03" + b"\xff" * 16 + b"\x00\x05\x03", 65),  # BGP length below 19
    (b"\x02\x00", 49),  # FSM event truncated
]


@pytest.mark.parametrize("body, offset", PEER_DOWN_ERRORS)
def test_peer_down_errors(body, offset):
    with pytest.raises(ContentError) as info:
        decode(bmp(2, PEER + body))
    assert info.value.offset == offset


# --- peer up ---------------------------------------------------------------------------

FOUR_OCTET = cap(65, struct.pack(">I", 4200000001))
ADD_PATH = cap(69, struct.pack(">HBB", 1, 1, 3) + struct.pack(">HBB", 2, 1, 1))
MP4 = cap(1, b"\x00\x01\x00\x01")
MP6 = cap(1, b"\x00\x02\x00\x01")
SENT = bgp_open(23456, "10.0.0.1", MP4, MP6, cap(2), FOUR_OCTET, ADD_PATH)
RECEIVED = bgp_open(
    65002, "10.0.0.2", MP4, cap(65, struct.pack(">I", 65002)), cap(69, struct.pack(">HBB", 1, 1, 2))
)


def peer_up_body(
    local=bytes(12) + bytes([10, 0, 0, 1]),
    local_port=179,
    remote_port=40000,
    opens=(SENT, RECEIVED),
    info=b"",
):
    return local + struct.pack(">HH", local_port, remote_port) + b"".join(opens) + info


def test_peer_up_ipv4_with_capabilities():
    got = decode(bmp(3, PEER + peer_up_body()))
    assert type(got) is PeerUp
    assert got.peer == PEER_DECODED
    assert (got.local_address, got.local_port, got.remote_port) == (
        IPv4Address("10.0.0.1"),
        179,
        40000,
    )
    assert got.info == ()
    sent, received = got.sent_open, got.received_open
    assert (sent.my_as, sent.asn, sent.bgp_id, sent.hold_time) == (
        23456,
        4200000001,
        "10.0.0.1",
        90,
    )
    assert sent.four_octet_as and sent.families == ((1, 1), (2, 1))
    assert sent.add_path() == {(1, 1): 3, (2, 1): 1}
    assert [c.code for c in sent.capabilities] == [1, 1, 2, 65, 69]
    assert received.asn == 65002 and received.add_path() == {(1, 1): 2}
    assert received.capabilities[2] == Capability(69, b"\x00\x01\x01\x02", ((1, 1, 2),))


def test_peer_up_ipv6_with_information_tlvs():
    header = peer_header(flags=0x80, address="2001:db8::2")
    local = IPv6Address("2001:db8::1").packed
    info = tlv(0, b"src1-ebgp") + tlv(3, b"vrf-blue") + tlv(99, b"\x01\x02")
    got = decode(bmp(3, header + peer_up_body(local=local, info=info)))
    assert got.local_address == IPv6Address("2001:db8::1")
    assert got.peer.address == IPv6Address("2001:db8::2")
    assert got.info == (InfoTlv(0, "src1-ebgp"), InfoTlv(3, "vrf-blue"), InfoTlv(99, b"\x01\x02"))


def test_peer_up_opens_without_capabilities():
    plain = bgp_open(65001, "1.1.1.1")
    got = decode(bmp(3, PEER + peer_up_body(opens=(plain, plain))))
    assert got.sent_open == got.received_open == Open(4, 65001, 90, "1.1.1.1", (), ())
    assert not got.sent_open.four_octet_as


PEER_UP_ERRORS = [
    # (body after the peer header, offset, error class)
    (bytes(15), 48, ContentError),  # local address truncated
    (peer_up_body(opens=()), 68, ContentError),  # no OPENs
    (peer_up_body(opens=(SENT,)), 68 + len(SENT), ContentError),  # one OPEN
    (peer_up_body(opens=(SENT, RECEIVED[:-1])), 68 + len(SENT), ContentError),  # truncated OPEN
    (peer_up_body(opens=(bgp(4, b""), RECEIVED)), 86, ContentError),  # KEEPALIVE instead of OPEN
    (
        peer_up_body(opens=(SENT, bgp(1, b"\x04\x00"))),
        68 + len(SENT) + 20,
        BgpError,
    ),  # OPEN body too short
    (peer_up_body(info=b"\x00\x01\x00\x05abc"), 68 + len(SENT) + len(RECEIVED) + 4, ContentError),
    (peer_up_body(info=b"\x00"), 68 + len(SENT) + len(RECEIVED), ContentError),
]


@pytest.mark.parametrize("body, offset, error", PEER_UP_ERRORS)
def test_peer_up_errors(body, offset, error):
    with pytest.raises(error) as info:
        decode(bmp(3, PEER + body))
    assert info.value.offset == offset


# --- initiation and termination ----------------------------------------------------------

INITIATION_TABLE = [
    (b"", ()),
    (
        tlv(2, b"gobgp-lab-mon") + tlv(1, b"gobgpd version 3.10.0"),
        (InfoTlv(2, "gobgp-lab-mon"), InfoTlv(1, "gobgpd version 3.10.0")),
    ),
    (tlv(0, b"free text") + tlv(3, b"vrf"), (InfoTlv(0, "free text"), InfoTlv(3, "vrf"))),
    (tlv(1, b"caf\xc3\xa9 \xff"), (InfoTlv(1, "caf\u00e9 \ufffd"),)),
    (tlv(2, b""), (InfoTlv(2, ""),)),
    (tlv(65000, b"\x00\xff"), (InfoTlv(65000, b"\x00\xff"),)),
]


@pytest.mark.parametrize("body, expected", INITIATION_TABLE)
def test_initiation(body, expected):
    got = decode(bmp(4, body))
    assert got == Initiation(expected)


def test_initiation_text_helper():
    got = decode(bmp(4, tlv(1, b"descr") + tlv(2, b"name")))
    assert (got.text(2), got.text(1), got.text(0)) == ("name", "descr", None)


TERMINATION_TABLE = [
    (b"", ((), None)),
    (tlv(1, b"\x00\x04"), ((InfoTlv(1, 4),), 4)),
    (tlv(0, b"bye") + tlv(1, b"\x00\x00"), ((InfoTlv(0, "bye"), InfoTlv(1, 0)), 0)),
    (tlv(1, b"\x01\x00") + tlv(9, b"?"), ((InfoTlv(1, 256), InfoTlv(9, b"?")), 256)),
]


@pytest.mark.parametrize("body, expected", TERMINATION_TABLE)
def test_termination(body, expected):
    assert decode(bmp(5, body)) == Termination(*expected)


TLV_ERRORS = [
    # (message type, body, offset)
    (4, b"\x00", 6),
    (4, b"\x00\x01\x00", 8),
    (4, tlv(1, b"abc")[:-1], 10),
    (4, tlv(1, b"ok") + b"\x00\x02\x00\x09", 16),
    (5, tlv(1, b"\x00"), 10),  # reason must be 2 bytes
    (5, tlv(1, b"\x00\x00\x00"), 10),
    (5, tlv(0, b"abc")[:-2], 10),
]


@pytest.mark.parametrize("msg_type, body, offset", TLV_ERRORS)
def test_tlv_errors(msg_type, body, offset):
    with pytest.raises(ContentError) as info:
        decode(bmp(msg_type, body))
    assert info.value.offset == offset


# --- route mirroring ---------------------------------------------------------------------


def test_route_mirroring_tlvs():
    keepalive = bgp(4, b"")
    garbage = b"\x00" * 19
    body = (
        PEER
        + tlv(0, keepalive)
        + tlv(1, b"\x00\x01")
        + tlv(0, garbage)
        + tlv(7, b"x")
        + tlv(0, EOR)
    )
    got = decode(bmp(6, body))
    assert type(got) is RouteMirroring and got.peer == PEER_DECODED
    kept, lost, bad, unknown, update = got.tlvs
    assert kept == MirroredMessage(0, keepalive, Keepalive(), None, None)
    assert lost == MirroredMessage(1, b"\x00\x01", None, 1, None)
    assert (bad.type, bad.raw, bad.message) == (0, garbage, None)
    assert "marker" in bad.error
    assert unknown == MirroredMessage(7, b"x")
    assert type(update.message) is Update and update.message.end_of_rib == "ipv4_unicast"


def test_route_mirroring_message_with_trailing_bytes_is_kept_with_a_note():
    (got,) = decode(bmp(6, PEER + tlv(0, bgp(4, b"") + b"zz"))).tlvs
    assert got.message == Keepalive() and "2 bytes" in got.error


def test_route_mirroring_errors():
    with pytest.raises(ContentError) as info:
        decode(bmp(6, PEER + tlv(1, b"\x00")))
    assert info.value.offset == 52
    with pytest.raises(ContentError):
        decode(bmp(6, PEER + tlv(0, bgp(4, b""))[:-1]))
    with pytest.raises(ContentError):
        decode(bmp(6, PEER[:20]))


# --- robustness --------------------------------------------------------------------------

SAMPLES = [
    bmp(1, PEER + stats_body(*(c for c, _ in STATS_TABLE))),
    bmp(2, PEER + b"\x01" + notification(6, 2, b"\x03bye")),
    bmp(2, PEER + b"\x02\x00\x01"),
    bmp(3, PEER + peer_up_body(info=tlv(0, b"descr"))),
    bmp(4, tlv(1, b"descr") + tlv(2, b"name")),
    bmp(5, tlv(0, b"bye") + tlv(1, b"\x00\x01")),
    bmp(6, PEER + tlv(0, bgp(4, b"")) + tlv(1, b"\x00\x00")),
    bmp(0, PEER + EOR),
]


def with_length(msg: bytes) -> bytes:
    return msg[:1] + struct.pack(">I", len(msg)) + msg[5:]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: f"type{m[5]}")
def test_every_truncation_raises_only_content_errors(msg):
    for cut in range(6, len(msg)):
        try:
            decode_bmp(with_length(msg[:cut]), lambda p: BgpContext(), {})
        except ContentError:
            pass


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: f"type{m[5]}")
def test_random_corruption_raises_only_content_errors(msg):
    rng = random.Random(msg)
    for _ in range(400):
        data = bytearray(msg)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(6, len(data))] = rng.randrange(256)
        try:
            decode_bmp(bytes(data), lambda p: BgpContext(), {})
        except ContentError:
            pass


# --- real captures -------------------------------------------------------------------------

PEER_TYPE_NAMES = {0: "global", 1: "rd_instance", 2: "local_instance", 3: "loc_rib"}
CAPABILITY_NAMES = {
    1: "multiprotocol",
    2: "route_refresh",
    5: "extended_nexthop",
    6: "extended_message",
    64: "graceful_restart",
    65: "four_octet_as",
    69: "add_path",
    70: "enhanced_route_refresh",
    71: "long_lived_gr",
    73: "fqdn",
    128: "route_refresh_old(cisco)",
}
FAMILIES = {(1, 1): "ipv4_unicast", (2, 1): "ipv6_unicast", (25, 70): "l2vpn_evpn"}
SEND_RECEIVE = {1: "receive", 2: "send", 3: "both"}
FLAG_LETTERS = ((0x80, "V"), (0x40, "L"), (0x20, "A"), (0x10, "O"))


def peer_key(peer: PeerHeader) -> str:
    return f"{PEER_TYPE_NAMES[peer.peer_type]}|{peer.distinguisher}|{peer.address}|{peer.asn}"


def open_summary(msg: Open) -> dict:
    return {
        "version": msg.version,
        "my_as": msg.my_as,
        "as4": msg.asn,
        "hold_time": msg.hold_time,
        "bgp_id": msg.bgp_id,
        "capabilities": [CAPABILITY_NAMES[c.code] for c in msg.capabilities],
        "families": [FAMILIES[f] for f in msg.families],
        "add_path": [
            {"family": FAMILIES[(afi, safi)], "send_receive": SEND_RECEIVE[mode]}
            for c in msg.capabilities
            if c.code == 69
            for afi, safi, mode in c.value
        ],
    }


def capture(path: Path):
    manifest = json.loads(path.with_suffix(".json").read_text())
    summary = next(s for s in manifest["bmp_summary"] if s["file"] == path.name)
    return Framer().feed(path.read_bytes()), summary


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_non_route_monitoring_messages(path):
    messages, summary = capture(path)
    decoded = [decode(m) for m in messages if m[5] != 0]

    by_type = {}
    for m in messages:
        name = [
            "route_monitoring",
            "statistics_report",
            "peer_down",
            "peer_up",
            "initiation",
            "termination",
            "route_mirroring",
        ][m[5]]
        by_type[name] = by_type.get(name, 0) + 1
    assert by_type == summary["messages_by_type"]

    initiations = [
        [{"type": t.type, "value": t.value} for t in m.info]
        for m in decoded
        if type(m) is Initiation
    ]
    assert initiations == [
        [{"type": t["type"], "value": t["value"]} for t in tlvs] for tlvs in summary["initiation"]
    ]

    terminations = [m for m in decoded if type(m) is Termination]
    assert [[{"type": t.type, "value": t.value} for t in m.info] for m in terminations] == [
        [{"type": t["type"], "value": t["value"]} for t in tlvs] for tlvs in summary["termination"]
    ]
    assert all(m.reason == 4 for m in terminations)

    peer_ups = [
        {
            "peer": peer_key(m.peer),
            "flags": [letter for bit, letter in FLAG_LETTERS if m.peer.flags & bit],
            "local_address": str(m.local_address),
            "local_port": m.local_port,
            "remote_port": m.remote_port,
            "sent_open": open_summary(m.sent_open),
            "received_open": open_summary(m.received_open),
            "info_tlvs": [{"type": t.type, "value": t.value} for t in m.info],
            "ts": m.peer.timestamp,
        }
        for m in decoded
        if type(m) is PeerUp
    ]
    expected_ups = [dict(up) for up in summary["peer_up"]]
    for up in expected_ups:
        up["info_tlvs"] = [{"type": t["type"], "value": t["value"]} for t in up["info_tlvs"]]
    assert peer_ups == expected_ups

    peer_downs = [
        {
            "peer": peer_key(m.peer),
            "reason": m.reason,
            "ts": m.peer.timestamp,
            "fsm_event": m.fsm_event,
        }
        for m in decoded
        if type(m) is PeerDown
    ]
    assert peer_downs == [
        {"peer": d["peer"], "reason": d["reason"], "ts": d["ts"], "fsm_event": d.get("fsm_event")}
        for d in summary["peer_down"]
    ]

    # "7:adj_rib_in_routes(len8)" -> the counter's type, name and length.
    stat_names = {}
    for key in summary["stat_counter_types_seen"]:
        number, rest = key.split(":", 1)
        stat_names[int(number)] = rest.split("(")[0]
    reports = [m for m in decoded if type(m) is StatisticsReport]
    assert len(reports) == summary["statistics_reports"]
    seen = {}
    last = {}
    for report in reports:
        for s in report.stats:
            assert isinstance(s.value, int) and s.afi is None
            seen[s.type] = seen.get(s.type, 0) + 1
            last.setdefault(peer_key(report.peer), {})[stat_names[s.type]] = s.value
    assert seen == {int(k.split(":")[0]): n for k, n in summary["stat_counter_types_seen"].items()}
    assert last == summary["stat_last_values_by_peer"]

    mirrored = {}
    for m in decoded:
        if type(m) is RouteMirroring:
            for t in m.tlvs:
                assert t.type == 0 and t.error is None and t.message is not None
                key = f"tlv_bgp_message:bgp_type{t.raw[18]}"
                mirrored[key] = mirrored.get(key, 0) + 1
    assert mirrored == summary["route_mirroring"]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_route_monitoring_messages(path):
    messages, summary = capture(path)
    cache = {}
    contexts = {}
    views = {}
    for m in messages:
        if m[5] != 0:
            continue
        got = decode_bmp(m, lambda peer: contexts.setdefault(peer.key, BgpContext()), cache)
        assert type(got) is RouteMonitoring
        view = (
            "loc_rib"
            if got.peer.peer_type == 3
            else "post_policy"
            if got.peer.post_policy
            else "pre_policy"
        )
        views[view] = views.get(view, 0) + 1
    assert views == summary["route_monitoring_by_view"]
    monitored = {p["address"] for p in summary["peers"] if p["msgs"].get("route_monitoring")}
    assert {str(key[2]) for key in contexts} == monitored
    # One cache entry per distinct header (peer, flags, BGP ID), whatever the timestamps.
    assert len(cache) == len({m[6:40] for m in messages if m[5] == 0})


def test_codec_imports_no_service_packages():
    import subprocess
    import sys

    code = (
        "import sys, pybmpmon.bmp.decode, pybmpmon.bmp.framer, pybmpmon.bgp.open\n"
        "bad = {'gevent', 'psycopg2', 'sentry_sdk', 'environs', 'logging'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"
