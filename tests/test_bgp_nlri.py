"""Tests of pybmpmon.bgp.nlri: NLRI of every family, MP_REACH/MP_UNREACH, RDs.

Wire bytes are built by the small helpers below and checked against the
expected decoding side by side; the EVPN routes of the real GoBGP and FRR
captures are checked against the capture's manifest.
"""

import json
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from pybmpmon.bgp.model import EvpnRoute, Nlri, RouteSet
from pybmpmon.bgp.nlri import (
    DECODABLE,
    decode_mp_reach,
    decode_mp_unreach,
    decode_nlri,
    format_rd,
)
from pybmpmon.errors import ContentError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# --- builders ----------------------------------------------------------------------


def v4(text):
    return socket.inet_pton(socket.AF_INET, text)


def v6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def addr(text):
    return v6(text) if ":" in text else v4(text)


def pfx(plen, text, last=None):
    """A prefix on the wire: length, then the fewest octets; *last* overrides the last octet."""
    octets = bytearray(addr(text)[: (plen + 7) // 8])
    if last is not None:
        octets[-1] = last
    return bytes([plen]) + bytes(octets)


def pid(path_id):
    return struct.pack("!I", path_id)


def label(value, bos=True):
    return (value << 4 | int(bos)).to_bytes(3, "big")


def rd0(asn, number):
    return struct.pack("!HHI", 0, asn, number)


def rd1(ip, number):
    return struct.pack("!H", 1) + v4(ip) + struct.pack("!H", number)


def rd2(asn, number):
    return struct.pack("!HIH", 2, asn, number)


def labeled(labels, plen, text, rd=b""):
    """Labeled (RFC 8277) or VPN (RFC 4364) NLRI: labels are ready 3-octet entries."""
    octets = addr(text)[: (plen + 7) // 8]
    bits = 24 * len(labels) + 8 * len(rd) + plen
    return bytes([bits]) + b"".join(labels) + rd + octets


def evpn(route_type, value):
    return bytes([route_type, len(value)]) + value


def esi(hexcolon):
    return bytes.fromhex(hexcolon.replace(":", ""))


ESI0 = bytes(10)
ESI_AS = esi("05:00:00:fd:e9:00:00:00:64:00")  # type 5, AS 65001, discriminator 100
MAC = bytes.fromhex("aabbcc000001")


def mac_ip(rd, tag, ip=None, labels=(10100,), esi_=ESI0):
    ip_field = bytes([0]) if ip is None else bytes([len(addr(ip)) * 8]) + addr(ip)
    value = rd + esi_ + struct.pack("!I", tag) + b"\x30" + MAC + ip_field
    return evpn(2, value + b"".join(x.to_bytes(3, "big") for x in labels))


def mp_reach(afi, safi, next_hop, nlri):
    return struct.pack("!HBB", afi, safi, len(next_hop)) + next_hop + b"\x00" + nlri


def mp_unreach(afi, safi, nlri):
    return struct.pack("!HB", afi, safi) + nlri


def N(prefix, path_id=None, rd=None, labels=(), route=None):
    return Nlri(prefix, path_id, rd, labels, route)


def decode(data, afi, safi, add_path=False):
    return decode_nlri(data, 0, len(data), afi, safi, add_path)


def prefixes(result):
    return [n.prefix for n in result]


# --- unicast and multicast ---------------------------------------------------------

IPV4_CASES = [
    (b"", []),
    (b"\x00", ["0.0.0.0/0"]),
    (pfx(8, "10.0.0.0"), ["10.0.0.0/8"]),
    (pfx(16, "172.16.0.0"), ["172.16.0.0/16"]),
    (pfx(24, "192.0.2.0"), ["192.0.2.0/24"]),
    (pfx(32, "192.0.2.255"), ["192.0.2.255/32"]),
    (pfx(17, "10.1.128.0"), ["10.1.128.0/17"]),
    (pfx(25, "192.0.2.128"), ["192.0.2.128/25"]),
    (pfx(31, "198.51.100.254"), ["198.51.100.254/31"]),
    (pfx(1, "128.0.0.0"), ["128.0.0.0/1"]),
    (pfx(9, "255.128.0.0"), ["255.128.0.0/9"]),
    # host bits beyond the length are cleared
    (pfx(23, "10.1.2.0", last=0x03), ["10.1.2.0/23"]),
    (pfx(1, "0.0.0.0", last=0xFF), ["128.0.0.0/1"]),
    (pfx(30, "192.0.2.0", last=0xFF), ["192.0.2.252/30"]),
    (pfx(12, "10.0.0.0", last=0xFF), ["10.240.0.0/12"]),
    (pfx(7, "0.0.0.0", last=0xFF), ["254.0.0.0/7"]),
    (
        pfx(24, "192.0.2.0") + b"\x00" + pfx(32, "1.2.3.4") + pfx(8, "10.0.0.0"),
        ["192.0.2.0/24", "0.0.0.0/0", "1.2.3.4/32", "10.0.0.0/8"],
    ),
]

IPV6_CASES = [
    (b"\x00", ["::/0"]),
    (pfx(32, "2001:db8::"), ["2001:db8::/32"]),
    (pfx(48, "2001:db8:1::"), ["2001:db8:1::/48"]),
    (pfx(56, "2001:db8:0:100::"), ["2001:db8:0:100::/56"]),
    (pfx(64, "2001:db8:1:2::"), ["2001:db8:1:2::/64"]),
    (pfx(128, "2001:db8::1"), ["2001:db8::1/128"]),
    (pfx(3, "2000::"), ["2000::/3"]),
    (pfx(127, "2001:db8::", last=0xFF), ["2001:db8::fe/127"]),
    (pfx(65, "2001:db8::", last=0xFF), ["2001:db8:0:0:8000::/65"]),
    (pfx(64, "2001:db8::") + pfx(128, "::1"), ["2001:db8::/64", "::1/128"]),
]


@pytest.mark.parametrize("safi", [1, 2])
@pytest.mark.parametrize(("wire", "expected"), IPV4_CASES)
def test_ipv4(wire, expected, safi):
    result = decode(wire, 1, safi)
    assert type(result) is tuple
    assert result == tuple(N(p) for p in expected)
    assert all(type(n) is Nlri for n in result)


@pytest.mark.parametrize("safi", [1, 2])
@pytest.mark.parametrize(("wire", "expected"), IPV6_CASES)
def test_ipv6(wire, expected, safi):
    assert decode(wire, 2, safi) == tuple(N(p) for p in expected)


def test_only_start_to_end_is_read():
    inner = pfx(24, "192.0.2.0") + pfx(16, "10.1.0.0")
    data = b"\xff\xff\xff" + inner + b"\xff\xff"
    assert prefixes(decode_nlri(data, 3, 3 + len(inner), 1, 1, False)) == [
        "192.0.2.0/24",
        "10.1.0.0/16",
    ]
    assert decode_nlri(data, 3, 3, 1, 1, False) == ()


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_other_buffer_types(kind):
    data = kind(pfx(24, "192.0.2.0") + pfx(64, "2001:db8::"))
    assert prefixes(decode_nlri(data, 0, 4, 1, 1, False)) == ["192.0.2.0/24"]
    assert prefixes(decode_nlri(data, 4, len(data), 2, 1, False)) == ["2001:db8::/64"]


@pytest.mark.parametrize(
    ("wire", "afi", "expected"),
    [
        (
            pid(1) + pfx(24, "192.0.2.0") + pid(0xFFFFFFFF) + pfx(24, "192.0.2.0"),
            1,
            [("192.0.2.0/24", 1), ("192.0.2.0/24", 0xFFFFFFFF)],
        ),
        (pid(7) + b"\x00", 1, [("0.0.0.0/0", 7)]),
        (pid(0) + pfx(23, "10.1.3.0"), 1, [("10.1.2.0/23", 0)]),
        (
            pid(2) + pfx(48, "2001:db8:1::") + pid(3) + pfx(128, "2001:db8::1"),
            2,
            [("2001:db8:1::/48", 2), ("2001:db8::1/128", 3)],
        ),
    ],
)
def test_add_path_unicast(wire, afi, expected):
    assert decode(wire, afi, 1, True) == tuple(N(p, path_id=i) for p, i in expected)


# --- labeled unicast (RFC 8277) ----------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "afi", "expected"),
    [
        (labeled([label(16000)], 24, "192.0.2.0"), 1, N("192.0.2.0/24", labels=(16000,))),
        (labeled([label(3)], 32, "10.0.0.1"), 1, N("10.0.0.1/32", labels=(3,))),
        (labeled([label(0)], 32, "10.0.0.1"), 1, N("10.0.0.1/32", labels=(0,))),
        (labeled([label(0xFFFFF)], 0, "0.0.0.0"), 1, N("0.0.0.0/0", labels=(0xFFFFF,))),
        (
            labeled([label(100, False), label(200, False), label(300)], 24, "192.0.2.0"),
            1,
            N("192.0.2.0/24", labels=(100, 200, 300)),
        ),
        # RFC 8277 §2.4 withdrawal: one Compatibility field, 0x800000 or the old 0x000000
        (labeled([b"\x80\x00\x00"], 24, "192.0.2.0"), 1, N("192.0.2.0/24")),
        (labeled([b"\x00\x00\x00"], 24, "192.0.2.0"), 1, N("192.0.2.0/24")),
        # host bits after the labels are cleared
        (
            b"\x2f" + label(16) + v4("10.1.3.0")[:3],
            1,
            N("10.1.2.0/23", labels=(16,)),
        ),
        (labeled([label(24001)], 64, "2001:db8:1:2::"), 2, N("2001:db8:1:2::/64", labels=(24001,))),
        (labeled([b"\x80\x00\x00"], 128, "2001:db8::1"), 2, N("2001:db8::1/128")),
    ],
)
def test_labeled(wire, afi, expected):
    assert decode(wire, afi, 4) == (expected,)


def test_labeled_several_and_add_path():
    wire = (
        pid(5)
        + labeled([label(16)], 24, "192.0.2.0")
        + pid(6)
        + labeled([label(17, False), label(18)], 16, "10.1.0.0")
    )
    assert decode(wire, 1, 4, True) == (
        N("192.0.2.0/24", path_id=5, labels=(16,)),
        N("10.1.0.0/16", path_id=6, labels=(17, 18)),
    )


# --- VPN (RFC 4364, RFC 4659) and route distinguishers ------------------------------


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (rd0(65000, 100), "65000:100"),
        (rd0(0, 0), "0:0"),
        (rd0(65535, 4294967295), "65535:4294967295"),
        (rd1("192.0.2.1", 7), "192.0.2.1:7"),
        (rd1("255.255.255.255", 65535), "255.255.255.255:65535"),
        (rd2(4200000000, 100), "4200000000:100"),
        (rd2(65536, 1), "65536:1"),
        (b"\x00\x03" + bytes.fromhex("010203040506"), "type3:010203040506"),
        (b"\xff\xff" + bytes(6), "type65535:000000000000"),
    ],
)
def test_format_rd(wire, text):
    assert format_rd(wire, 0) == text
    assert format_rd(b"\xaa" * 5 + wire + b"\xbb", 5) == text


@pytest.mark.parametrize(("data", "offset"), [(bytes(7), 0), (bytes(8), 1), (bytes(8), -1)])
def test_format_rd_truncated(data, offset):
    with pytest.raises(ContentError) as info:
        format_rd(data, offset)
    assert info.value.offset == offset


@pytest.mark.parametrize(
    ("wire", "afi", "expected"),
    [
        (
            labeled([label(100)], 24, "192.0.2.0", rd0(65000, 1)),
            1,
            N("192.0.2.0/24", rd="65000:1", labels=(100,)),
        ),
        (
            labeled([label(101)], 32, "10.0.0.1", rd1("192.0.2.1", 2)),
            1,
            N("10.0.0.1/32", rd="192.0.2.1:2", labels=(101,)),
        ),
        (
            labeled([label(102)], 0, "0.0.0.0", rd2(4200000000, 3)),
            1,
            N("0.0.0.0/0", rd="4200000000:3", labels=(102,)),
        ),
        (
            labeled([b"\x80\x00\x00"], 24, "192.0.2.0", rd0(65000, 1)),
            1,
            N("192.0.2.0/24", rd="65000:1"),
        ),
        (
            labeled([label(1, False), label(2)], 8, "10.0.0.0", rd0(1, 1)),
            1,
            N("10.0.0.0/8", rd="1:1", labels=(1, 2)),
        ),
        (
            bytes([24 + 64 + 23]) + label(5) + rd0(1, 2) + v4("10.1.3.0")[:3],
            1,
            N("10.1.2.0/23", rd="1:2", labels=(5,)),
        ),
        (
            labeled([label(200)], 64, "2001:db8:1:2::", rd0(65000, 9)),
            2,
            N("2001:db8:1:2::/64", rd="65000:9", labels=(200,)),
        ),
        (
            labeled([label(201)], 128, "2001:db8::1", rd1("198.51.100.1", 65535)),
            2,
            N("2001:db8::1/128", rd="198.51.100.1:65535", labels=(201,)),
        ),
    ],
)
def test_vpn(wire, afi, expected):
    assert decode(wire, afi, 128) == (expected,)
    assert decode(pid(42) + wire, afi, 128, True) == (expected._replace(path_id=42),)


# --- EVPN (RFC 7432, RFC 9136) ------------------------------------------------------

RD = rd1("192.0.2.1", 100)
TAG = struct.pack("!I", 100)


def E(route_type, **fields):
    return EvpnRoute(route_type, **fields)


EVPN_CASES = [
    # type 1, Ethernet A-D
    (
        evpn(1, RD + ESI_AS + struct.pack("!I", 0) + (10404).to_bytes(3, "big")),
        N(
            None,
            rd="192.0.2.1:100",
            labels=(10404,),
            route=E(1, esi="05:00:00:fd:e9:00:00:00:64:00", ethernet_tag=0),
        ),
    ),
    (
        evpn(1, rd0(65000, 1) + ESI0 + b"\xff\xff\xff\xff" + b"\xff\xff\xff"),
        N(
            None,
            rd="65000:1",
            labels=(0xFFFFFF,),
            route=E(1, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=0xFFFFFFFF),
        ),
    ),
    # type 2, MAC/IP: no IP, IPv4, IPv6, and with a second label
    (
        mac_ip(RD, 0),
        N(
            None,
            rd="192.0.2.1:100",
            labels=(10100,),
            route=E(
                2, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=0, mac="aa:bb:cc:00:00:01"
            ),
        ),
    ),
    (
        mac_ip(RD, 7, "10.100.0.1", esi_=ESI_AS),
        N(
            None,
            rd="192.0.2.1:100",
            labels=(10100,),
            route=E(
                2,
                esi="05:00:00:fd:e9:00:00:00:64:00",
                ethernet_tag=7,
                mac="aa:bb:cc:00:00:01",
                ip="10.100.0.1",
            ),
        ),
    ),
    (
        mac_ip(RD, 100, "2001:db8:100::1", labels=(10303, 50000)),
        N(
            None,
            rd="192.0.2.1:100",
            labels=(10303, 50000),
            route=E(
                2,
                esi="00:00:00:00:00:00:00:00:00:00",
                ethernet_tag=100,
                mac="aa:bb:cc:00:00:01",
                ip="2001:db8:100::1",
            ),
        ),
    ),
    (
        mac_ip(RD, 0, "10.100.0.2", labels=(1, 2)),
        N(
            None,
            rd="192.0.2.1:100",
            labels=(1, 2),
            route=E(
                2,
                esi="00:00:00:00:00:00:00:00:00:00",
                ethernet_tag=0,
                mac="aa:bb:cc:00:00:01",
                ip="10.100.0.2",
            ),
        ),
    ),
    # type 3, Inclusive Multicast Ethernet Tag: IPv4 and IPv6 originator
    (
        evpn(3, RD + TAG + b"\x20" + v4("192.0.2.100")),
        N(None, rd="192.0.2.1:100", route=E(3, ethernet_tag=100, ip="192.0.2.100")),
    ),
    (
        evpn(3, rd2(4200000000, 5) + TAG + b"\x80" + v6("2001:db8::64")),
        N(None, rd="4200000000:5", route=E(3, ethernet_tag=100, ip="2001:db8::64")),
    ),
    # type 4, Ethernet Segment: IPv4 and IPv6 originator
    (
        evpn(4, RD + ESI_AS + b"\x20" + v4("192.0.2.9")),
        N(
            None,
            rd="192.0.2.1:100",
            route=E(4, esi="05:00:00:fd:e9:00:00:00:64:00", ip="192.0.2.9"),
        ),
    ),
    (
        evpn(4, RD + ESI_AS + b"\x80" + v6("2001:db8::9")),
        N(
            None,
            rd="192.0.2.1:100",
            route=E(4, esi="05:00:00:fd:e9:00:00:00:64:00", ip="2001:db8::9"),
        ),
    ),
    # type 5, IP Prefix: IPv4 and IPv6, with a gateway, host bits cleared
    (
        evpn(
            5, RD + ESI0 + bytes(4) + b"\x18" + v4("10.200.0.0") + v4("0.0.0.0") + b"\x00\x27\xda"
        ),
        N(
            "10.200.0.0/24",
            rd="192.0.2.1:100",
            labels=(10202,),
            route=E(5, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=0, gateway="0.0.0.0"),
        ),
    ),
    (
        evpn(5, RD + ESI0 + TAG + b"\x17" + v4("10.200.1.77") + v4("192.0.2.1") + b"\x00\x00\x01"),
        N(
            "10.200.0.0/23",
            rd="192.0.2.1:100",
            labels=(1,),
            route=E(5, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=100, gateway="192.0.2.1"),
        ),
    ),
    (
        evpn(5, RD + ESI0 + TAG + b"\x00" + v4("10.1.2.3") + bytes(4) + bytes(3)),
        N(
            "0.0.0.0/0",
            rd="192.0.2.1:100",
            labels=(0,),
            route=E(5, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=100, gateway="0.0.0.0"),
        ),
    ),
    (
        evpn(
            5,
            RD
            + ESI0
            + TAG
            + b"\x40"
            + v6("2001:db8:5:6::1")
            + v6("2001:db8::fe")
            + b"\x00\x27\x10",
        ),
        N(
            "2001:db8:5:6::/64",
            rd="192.0.2.1:100",
            labels=(10000,),
            route=E(
                5, esi="00:00:00:00:00:00:00:00:00:00", ethernet_tag=100, gateway="2001:db8::fe"
            ),
        ),
    ),
    # unknown route types are kept whole
    (evpn(9, b"\x01\x02\x03"), N(None, route=E(9, raw=bytes.fromhex("0903010203")))),
    (evpn(0, b""), N(None, route=E(0, raw=b"\x00\x00"))),
]


@pytest.mark.parametrize(("wire", "expected"), EVPN_CASES)
def test_evpn(wire, expected):
    assert decode(wire, 25, 70) == (expected,)
    assert decode(pid(9) + wire, 25, 70, True) == (expected._replace(path_id=9),)


def test_evpn_several_in_one_attribute():
    wire = b"".join(w for w, _ in EVPN_CASES)
    assert decode(wire, 25, 70) == tuple(n for _, n in EVPN_CASES)


def test_evpn_keys():
    by_type = {n.evpn.route_type: n.key for _, n in EVPN_CASES[::-1]}
    assert by_type[1] == "type1 192.0.2.1:100 esi 05:00:00:fd:e9:00:00:00:64:00 etag 0"
    assert by_type[3] == "type3 192.0.2.1:100 etag 100 ip 192.0.2.100"
    assert by_type[5] == "type5 192.0.2.1:100 etag 0 prefix 10.200.0.0/24"


# --- malformed input: only ContentError, at the right offset -------------------------

MALFORMED = [
    # (afi, safi, add_path, wire, offset)
    (1, 1, False, b"\x21" + bytes(5), 0),
    (1, 1, False, pfx(24, "192.0.2.0") + b"\xff", 4),
    (1, 1, False, b"\x18\x0a\x01", 0),
    (1, 1, False, pfx(8, "10.0.0.0") + b"\x20\x01\x02\x03", 2),
    (1, 1, False, b"\x01", 0),
    (1, 2, False, b"\x19\x01\x02\x03", 0),
    (2, 1, False, b"\x81" + bytes(17), 0),
    (2, 1, False, b"\x40" + bytes(7), 0),
    (2, 2, False, pfx(128, "::1")[:-1], 0),
    (1, 1, True, b"\x00\x00\x00", 0),
    (1, 1, True, pid(1), 0),
    (1, 1, True, pid(1) + b"\x21", 4),
    (1, 1, True, pid(1) + pfx(8, "10.0.0.0") + pid(2) + b"\x10\x01", 6 + 4),
    (2, 1, True, pid(1) + b"\x81", 4),
    (2, 1, True, pid(1) + b"\x10", 4),
    # labeled
    (1, 4, False, b"\x10" + label(1), 0),
    (1, 4, False, b"\x18" + label(1)[:2], 1),
    (1, 4, False, b"\x30" + label(1, False) + label(2)[:1], 4),
    (1, 4, False, b"\x28" + label(1, False), 0),
    (1, 4, False, bytes([24 + 33]) + label(1) + bytes(5), 0),
    (1, 4, False, labeled([label(1)], 24, "192.0.2.0")[:-1], 0),
    (2, 4, False, bytes([24 + 129]) + label(1) + bytes(17), 0),
    (1, 4, True, pid(1)[:3], 0),
    # VPN
    (1, 128, False, bytes([24 + 63]) + label(1) + bytes(8), 0),
    (1, 128, False, bytes([24 + 64 + 8]) + label(1) + rd0(1, 1)[:5], 4),
    (1, 128, False, labeled([label(1)], 24, "192.0.2.0", rd0(1, 1))[:-1], 0),
    (1, 128, False, bytes([24 + 64 + 33]) + label(1) + rd0(1, 1) + bytes(5), 0),
    (2, 128, False, bytes([24 + 64 + 129]) + label(1) + rd0(1, 1) + bytes(17), 0),
    # EVPN
    (25, 70, False, b"\x02", 0),
    (25, 70, False, evpn(3, RD + TAG + b"\x20" + v4("192.0.2.1"))[:-1], 0),
    (25, 70, True, pid(1)[:2], 0),
    (25, 70, True, pid(1) + b"\x02", 4),
    (25, 70, False, evpn(1, bytes(24)), 0),
    (25, 70, False, evpn(1, bytes(26)), 0),
    (25, 70, False, evpn(2, bytes(32)), 0),
    (25, 70, False, evpn(2, RD + ESI0 + TAG + b"\x2f" + MAC + b"\x00" + bytes(3)), 2 + 22),
    (25, 70, False, evpn(2, RD + ESI0 + TAG + b"\x30" + MAC + b"\x18" + bytes(6)), 2 + 29),
    (25, 70, False, evpn(2, RD + ESI0 + TAG + b"\x30" + MAC + b"\x20" + bytes(4)), 0),
    (25, 70, False, evpn(2, RD + ESI0 + TAG + b"\x30" + MAC + b"\x00" + bytes(4)), 0),
    (25, 70, False, evpn(2, RD + ESI0 + TAG + b"\x30" + MAC + b"\x80" + bytes(16 + 9)), 0),
    (25, 70, False, evpn(3, RD + TAG), 0),
    (25, 70, False, evpn(3, RD + TAG + b"\x80" + bytes(4)), 2 + 12),
    (25, 70, False, evpn(3, RD + TAG + b"\x00"), 2 + 12),
    (25, 70, False, evpn(4, RD + ESI0), 0),
    (25, 70, False, evpn(4, RD + ESI0 + b"\x20" + bytes(16)), 2 + 18),
    (25, 70, False, evpn(5, bytes(35)), 0),
    (25, 70, False, evpn(5, RD + ESI0 + TAG + b"\x21" + bytes(11)), 2 + 22),
    (25, 70, False, evpn(5, RD + ESI0 + TAG + b"\x81" + bytes(35)), 2 + 22),
    (25, 70, False, evpn(1, RD + ESI0 + TAG + bytes(3)) + evpn(2, bytes(3)), 27),
]


@pytest.mark.parametrize(("afi", "safi", "add_path", "wire", "offset"), MALFORMED)
def test_malformed(afi, safi, add_path, wire, offset):
    with pytest.raises(ContentError) as info:
        decode(wire, afi, safi, add_path)
    assert info.value.offset == offset
    # the same bytes further into a buffer report the offset in that buffer
    with pytest.raises(ContentError) as info:
        decode_nlri(b"\xee" * 10 + wire + b"\x00" * 40, 10, 10 + len(wire), afi, safi, add_path)
    assert info.value.offset == offset + 10


def test_bad_bounds_and_families():
    with pytest.raises(ContentError):
        decode_nlri(b"\x00", 0, 2, 1, 1, False)
    with pytest.raises(ContentError):
        decode_nlri(b"\x00", -1, 1, 1, 1, False)
    with pytest.raises(ContentError):
        decode_nlri(b"\x00\x00", 2, 1, 1, 1, False)
    for afi, safi in [(1, 5), (3, 1), (25, 65), (2, 133), (1, 129)]:
        assert (afi, safi) not in DECODABLE
        with pytest.raises(ContentError):
            decode_nlri(b"\x00", 0, 1, afi, safi, False)


def _valid_samples():
    """Well-formed NLRI of every decodable family, for the cut and fuzz tests."""
    yield 1, 1, False, b"".join(w for w, _ in IPV4_CASES)
    yield 2, 1, False, b"".join(w for w, _ in IPV6_CASES)
    yield 1, 1, True, pid(1) + pfx(24, "192.0.2.0") + pid(2) + pfx(32, "10.0.0.1")
    yield 1, 4, False, labeled([label(1, False), label(2)], 24, "192.0.2.0")
    yield 2, 4, True, pid(3) + labeled([label(1)], 64, "2001:db8::")
    yield 1, 128, False, labeled([label(1)], 24, "192.0.2.0", rd1("192.0.2.1", 1))
    yield 2, 128, False, labeled([label(1)], 48, "2001:db8:1::", rd0(1, 1))
    yield 25, 70, False, b"".join(w for w, _ in EVPN_CASES)
    yield 25, 70, True, pid(1) + EVPN_CASES[4][0]


@pytest.mark.parametrize(("afi", "safi", "add_path", "wire"), list(_valid_samples()))
def test_every_cut_decodes_or_raises_content_error(afi, safi, add_path, wire):
    full = decode(wire, afi, safi, add_path)
    assert full
    for cut in range(len(wire)):
        try:
            part = decode_nlri(wire, 0, cut, afi, safi, add_path)
        except ContentError as exc:
            assert 0 <= exc.offset <= cut
        else:
            assert len(part) < len(full) or cut == len(wire)


@pytest.mark.parametrize(("afi", "safi"), sorted(DECODABLE))
@pytest.mark.parametrize("add_path", [False, True])
def test_random_bytes_raise_only_content_error(afi, safi, add_path):
    rng = random.Random(afi * 1000 + safi * 2 + add_path)
    decoded = 0
    for _ in range(1500):
        wire = rng.randbytes(rng.randrange(0, 70))
        if rng.random() < 0.5 and wire:
            # plausible lengths reach deeper than pure noise
            wire = bytes([rng.choice([0, 8, 24, 32, 48, 64, 88, 112, 120, 128])]) + wire[1:]
        try:
            result = decode(wire, afi, safi, add_path)
        except ContentError as exc:
            assert 0 <= exc.offset <= len(wire)
        else:
            decoded += 1
            assert all(type(n) is Nlri for n in result)
    assert decoded  # at least the empty inputs


# --- MP_REACH_NLRI / MP_UNREACH_NLRI --------------------------------------------------


@pytest.mark.parametrize(
    ("afi", "safi", "next_hop", "nlri", "expected_nh", "expected_ll", "expected_nlri"),
    [
        (1, 1, v4("192.0.2.1"), pfx(24, "10.0.0.0"), "192.0.2.1", None, [N("10.0.0.0/24")]),
        # RFC 8950: IPv6 next hop for IPv4 routes, with and without link-local
        (1, 1, v6("2001:db8::1"), pfx(24, "10.0.0.0"), "2001:db8::1", None, [N("10.0.0.0/24")]),
        (
            1,
            1,
            v6("2001:db8::1") + v6("fe80::1"),
            pfx(8, "10.0.0.0"),
            "2001:db8::1",
            "fe80::1",
            [N("10.0.0.0/8")],
        ),
        (
            2,
            1,
            v6("2001:db8::1"),
            pfx(48, "2001:db8:1::"),
            "2001:db8::1",
            None,
            [N("2001:db8:1::/48")],
        ),
        (
            2,
            1,
            v6("2001:db8::1") + v6("fe80::a:b"),
            pfx(48, "2001:db8:1::"),
            "2001:db8::1",
            "fe80::a:b",
            [N("2001:db8:1::/48")],
        ),
        (2, 2, v6("2001:db8::2"), b"", "2001:db8::2", None, []),
        (
            1,
            4,
            v4("192.0.2.1"),
            labeled([label(7)], 32, "10.0.0.1"),
            "192.0.2.1",
            None,
            [N("10.0.0.1/32", labels=(7,))],
        ),
        (
            2,
            4,
            v6("2001:db8::1"),
            labeled([label(7)], 128, "2001:db8::9"),
            "2001:db8::1",
            None,
            [N("2001:db8::9/128", labels=(7,))],
        ),
        # VPN next hops carry an RD (zero) in front of each address
        (
            1,
            128,
            rd0(0, 0) + v4("192.0.2.1"),
            labeled([label(9)], 24, "10.0.0.0", rd0(1, 1)),
            "192.0.2.1",
            None,
            [N("10.0.0.0/24", rd="1:1", labels=(9,))],
        ),
        (
            1,
            128,
            rd0(0, 0) + v6("2001:db8::1"),
            labeled([label(9)], 24, "10.0.0.0", rd0(1, 1)),
            "2001:db8::1",
            None,
            [N("10.0.0.0/24", rd="1:1", labels=(9,))],
        ),
        (
            2,
            128,
            rd0(0, 0) + v6("2001:db8::1"),
            labeled([label(9)], 64, "2001:db8::", rd0(1, 1)),
            "2001:db8::1",
            None,
            [N("2001:db8::/64", rd="1:1", labels=(9,))],
        ),
        (
            2,
            128,
            rd0(0, 0) + v6("2001:db8::1") + rd0(0, 0) + v6("fe80::1"),
            b"",
            "2001:db8::1",
            "fe80::1",
            [],
        ),
        (25, 70, v4("192.0.2.10"), EVPN_CASES[3][0], "192.0.2.10", None, [EVPN_CASES[3][1]]),
        (25, 70, v6("2001:db8::10"), EVPN_CASES[6][0], "2001:db8::10", None, [EVPN_CASES[6][1]]),
    ],
)
def test_mp_reach(afi, safi, next_hop, nlri, expected_nh, expected_ll, expected_nlri):
    value = mp_reach(afi, safi, next_hop, nlri)
    names = {1: "unicast", 2: "multicast", 4: "labeled_unicast", 128: "vpn"}
    family = "evpn" if afi == 25 else f"ipv{4 if afi == 1 else 6}_{names[safi]}"
    expected = RouteSet(afi, safi, family, expected_nh, tuple(expected_nlri), expected_ll, None)
    assert decode_mp_reach(value, 0, len(value), frozenset()) == expected
    # inside a larger buffer
    data = b"\x90\x0e" + value + b"\x40\x01\x01\x00"
    assert decode_mp_reach(data, 2, 2 + len(value), frozenset()) == expected


def test_mp_reach_add_path_is_per_family():
    value = mp_reach(1, 1, v4("192.0.2.1"), pid(4) + pfx(24, "10.0.0.0"))
    routes = decode_mp_reach(value, 0, len(value), frozenset({(1, 1)})).nlri
    assert routes == (N("10.0.0.0/24", path_id=4),)
    # without Add-Path for (1, 1), the path id is read as prefixes: 0.0.0.0/0 x 3, then /4
    routes = decode_mp_reach(value, 0, len(value), frozenset({(2, 1), (1, 4)})).nlri
    assert prefixes(routes)[:3] == ["0.0.0.0/0"] * 3
    value = mp_unreach(25, 70, pid(1) + EVPN_CASES[0][0])
    routes = decode_mp_unreach(value, 0, len(value), frozenset({(25, 70)})).nlri
    assert routes == (EVPN_CASES[0][1]._replace(path_id=1),)


def test_mp_reach_unknown_family_is_kept_raw():
    nlri = b"\x01\x02\x03\x04"
    value = mp_reach(1, 133, b"", nlri)  # flowspec: no next hop
    assert decode_mp_reach(value, 0, len(value), frozenset()) == RouteSet(
        1, 133, "afi1_safi133", None, (), None, nlri
    )
    value = mp_reach(16388, 71, v4("192.0.2.1"), nlri)  # BGP-LS
    assert decode_mp_reach(value, 0, len(value), frozenset()) == RouteSet(
        16388, 71, "afi16388_safi71", "192.0.2.1", (), None, nlri
    )
    value = mp_reach(3, 1, bytes(7), b"")
    assert decode_mp_reach(value, 0, len(value), frozenset()) == RouteSet(
        3, 1, "afi3_safi1", None, (), None, b""
    )


@pytest.mark.parametrize(
    ("value", "offset"),
    [
        (b"\x00\x01\x01\x04", 0),  # shorter than 5 octets
        (b"\x00\x01\x01\x04\xc0\x00\x02", 3),  # next hop runs past the end
        (struct.pack("!HBB", 1, 1, 4) + v4("192.0.2.1"), 3),  # no reserved octet
        (mp_reach(1, 1, bytes(5), b""), 3),  # next hop length not valid for IPv4
        (mp_reach(2, 1, b"", pfx(48, "2001:db8::")), 3),
        (mp_reach(25, 70, bytes(6), b""), 3),
        (mp_reach(1, 1, v4("192.0.2.1"), b"\x21\x00\x00\x00\x00"), 9),
    ],
)
def test_mp_reach_malformed(value, offset):
    with pytest.raises(ContentError) as info:
        decode_mp_reach(value, 0, len(value), frozenset())
    assert info.value.offset == offset
    with pytest.raises(ContentError) as info:
        decode_mp_reach(b"\x00" * 3 + value, 3, 3 + len(value), frozenset())
    assert info.value.offset == offset + 3


def test_mp_unreach():
    value = mp_unreach(2, 1, pfx(56, "2001:db8:0:100::"))
    assert decode_mp_unreach(value, 0, len(value), frozenset()) == RouteSet(
        2, 1, "ipv6_unicast", None, (N("2001:db8:0:100::/56"),), None, None
    )
    # End-of-RIB form: no NLRI at all
    value = mp_unreach(25, 70, b"")
    assert decode_mp_unreach(value, 0, len(value), frozenset()) == RouteSet(
        25, 70, "evpn", None, (), None, None
    )
    value = mp_unreach(1, 4, labeled([b"\x80\x00\x00"], 24, "192.0.2.0"))
    assert decode_mp_unreach(value, 0, len(value), frozenset()).nlri == (N("192.0.2.0/24"),)
    value = mp_unreach(1, 66, b"\xab\xcd")
    assert decode_mp_unreach(value, 0, len(value), frozenset()) == RouteSet(
        1, 66, "afi1_safi66", None, (), None, b"\xab\xcd"
    )
    for bad, offset in [(b"\x00\x02", 0), (mp_unreach(2, 1, b"\x81"), 3)]:
        with pytest.raises(ContentError) as info:
            decode_mp_unreach(bad, 0, len(bad), frozenset())
        assert info.value.offset == offset


# --- the real captures ----------------------------------------------------------------


def mp_attributes(path):
    """(type code, attribute value) of every MP_REACH/MP_UNREACH in a BMP capture.

    A tiny walker: BMP common header (6), per-peer header (42) for route
    monitoring, BGP header (19), withdrawn routes, then the attribute TLVs.
    """
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        _, length, msg_type = struct.unpack_from("!BIB", data, offset)
        msg, offset = data[offset : offset + length], offset + length
        if msg_type != 0:
            continue
        bgp = msg[6 + 42 :]
        body = bgp[19 : struct.unpack_from("!H", bgp, 16)[0]]
        pos = 2 + struct.unpack_from("!H", body, 0)[0]
        attrs_end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
        pos += 2
        while pos < attrs_end:
            flags, code = body[pos], body[pos + 1]
            if flags & 0x10:
                size, head = struct.unpack_from("!H", body, pos + 2)[0], 4
            else:
                size, head = body[pos + 2], 3
            if code in (14, 15):
                yield code, body[pos + head : pos + head + size]
            pos += head + size


def corpus_file(name):
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.bmp")) or ["none.bmp"])
def test_corpus_mp_attributes_decode(name):
    seen = 0
    for code, value in mp_attributes(corpus_file(name)):
        decoder = decode_mp_reach if code == 14 else decode_mp_unreach
        routes = decoder(value, 0, len(value), frozenset())
        assert routes.afi_safi in ("ipv6_unicast", "evpn")
        assert routes.raw is None
        seen += 1
    assert seen or name == "gobgp-both-small-1.bmp"  # "both" sends no route monitoring


@pytest.mark.parametrize("name", ["gobgp-all-1", "frr-prepost-1"])
def test_corpus_evpn_matches_manifest(name):
    manifest = json.loads(corpus_file(f"{name}.json").read_text())
    decoded = {}  # rd -> {(next hop, Nlri)}: pre- and post-policy, re-announcements
    for code, value in mp_attributes(corpus_file(f"{name}.bmp")):
        if code == 14 and value[:3] == b"\x00\x19\x46":
            routes = decode_mp_reach(value, 0, len(value), frozenset())
            for nlri in routes.nlri:
                decoded.setdefault(nlri.rd, set()).add((routes.next_hop, nlri))
    sent = manifest["routes"]["announce"]["src1"] + manifest["routes"]["reannounce"]["src1"]
    expected = [r for r in sent if r["family"] == "l2vpn_evpn"]
    assert len(expected) == 7
    for route in expected:
        (nlri,) = {nlri for next_hop, nlri in decoded[route["rd"]]}
        assert route["next_hop"] in {next_hop for next_hop, _ in decoded[route["rd"]]}
        evpn_route = nlri.evpn
        assert evpn_route.route_type == route["evpn_type"]
        assert evpn_route.ethernet_tag == route["etag"]
        assert evpn_route.mac == route.get("mac")
        if route["evpn_type"] == 5:
            assert nlri.prefix == route["ip_prefix"]
            assert evpn_route.ip is None and evpn_route.gateway == "0.0.0.0"
        else:
            assert nlri.prefix is None
            assert evpn_route.ip == route.get("ip")
        if route["evpn_type"] == 1:
            # GoBGP shows this ESI as "AS 65001 100": type 5, AS 65001, discriminator 100
            assert route["esi"] == "AS 65001 100"
            assert evpn_route.esi == "05:00:00:fd:e9:00:00:00:64:00"
        if name.startswith("gobgp"):
            assert nlri.labels == ((route["label"],) if "label" in route else ())
        else:
            # FRR re-advertises EVPN routes it has no local VNI for with label 0
            assert nlri.labels == ((0,) if "label" in route else ())


# --- cost of the hot path (printed, not asserted) --------------------------------------


def test_ipv4_timing(capsys):
    """Decode 1M IPv4 prefixes: in one call, and in UPDATE-sized (4 kB) calls."""
    lengths = [24] * 12 + [22, 23, 20, 16, 19, 21, 32, 18]
    parts = []
    for i in range(1_000_000):
        plen = lengths[i % len(lengths)]
        octets = (i * 2654435761 & 0xFFFFFFFF).to_bytes(4, "big")[: (plen + 7) // 8]
        parts.append(bytes([plen]) + octets)
    data = b"".join(parts)
    bounds, start, end = [], 0, 0
    for part in parts:
        end += len(part)
        if end - start >= 4000:
            bounds.append((start, end))
            start = end
    bounds.append((start, end))

    started = time.process_time()
    routes = decode_nlri(data, 0, len(data), 1, 1, False)
    whole = time.process_time() - started
    assert len(routes) == 1_000_000
    for i in (0, 1, 17, 999_999):
        plen = lengths[i % len(lengths)]
        value = (i * 2654435761 & 0xFFFFFFFF) & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        assert routes[i].prefix == f"{socket.inet_ntoa(value.to_bytes(4, 'big'))}/{plen}"
    del routes  # so the chunked run does not pay GC passes over them

    started = time.process_time()
    count = sum(len(decode_nlri(data, s, e, 1, 1, False)) for s, e in bounds)
    chunked = time.process_time() - started
    assert count == 1_000_000
    with capsys.disabled():
        print(
            f"\ndecode_nlri, CPU ns per IPv4 prefix: {whole * 1e3:.0f} in one call of 1M "
            f"(includes GC passes over 1M live tuples), {chunked * 1e3:.0f} in 4 kB calls"
        )
