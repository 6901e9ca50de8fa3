"""Byte-level tests of pybmpmon.bgp.attributes: decoding, RFC 7606 error
handling, the RFC 6793 AS4 merge, and the text renderers."""

import json
import random
import socket
import struct
from pathlib import Path

import pytest

from pybmpmon.bgp.attributes import (
    as_path_list,
    as_path_text,
    build_attributes,
    format_community,
    format_ext_community,
    format_large_community,
    origin_as,
)
from pybmpmon.bgp.model import Attributes
from pybmpmon.errors import BgpError
from pybmpmon.iana import AS_TRANS, Origin, name_of

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# ---------------------------------------------------------------------------
# Builders

# Well-known attributes are transitive, the rest optional (RFC 4271 §5).
_DEFAULT_FLAGS = {1: 0x40, 2: 0x40, 3: 0x40, 5: 0x40, 6: 0x40, 4: 0x80, 9: 0x80, 10: 0x80, 26: 0x80}


def attr(code, value, flags=None, extended=False):
    """One attribute TLV on the wire; extended length when asked or needed."""
    if flags is None:
        flags = _DEFAULT_FLAGS.get(code, 0xC0)
    if extended or len(value) > 255:
        return struct.pack(">BBH", flags | 0x10, code, len(value)) + value
    return struct.pack(">BBB", flags & ~0x10, code, len(value)) + value


def walk(block, base=0):
    """Attribute TLVs of a block as build_attributes items (the UPDATE decoder's job)."""
    items = []
    pos = 0
    while pos < len(block):
        flags, code = block[pos], block[pos + 1]
        if flags & 0x10:
            length = struct.unpack_from(">H", block, pos + 2)[0]
            head = 4
        else:
            length = block[pos + 2]
            head = 3
        items.append((code, flags, block[pos + head : pos + head + length], base + pos + head))
        pos += head + length
    assert pos == len(block)
    return items


def decode(*attrs, four=True, base=0):
    return build_attributes(walk(b"".join(attrs), base), four)


def seg(seg_type, *asns, wide=True):
    return bytes([seg_type, len(asns)]) + struct.pack(
        (">%dI" if wide else ">%dH") % len(asns), *asns
    )


def ip(text):
    return socket.inet_pton(socket.AF_INET, text)


def u32(n):
    return struct.pack(">I", n)


def ext(*octets):
    return bytes(octets)


ORIGIN_IGP = attr(1, b"\x00")
PATH_65001 = attr(2, seg(2, 65001))
NEXT_HOP = attr(3, ip("192.0.2.1"))

# ---------------------------------------------------------------------------
# Well-formed attributes: (wire attributes, four_octet_as, expected fields)

VALID = [
    pytest.param([attr(1, b"\x00")], True, {"origin": 0}, id="origin-igp"),
    pytest.param([attr(1, b"\x01")], True, {"origin": 1}, id="origin-egp"),
    pytest.param([attr(1, b"\x02")], True, {"origin": Origin.INCOMPLETE}, id="origin-incomplete"),
    pytest.param([attr(2, b"")], True, {"as_path": ()}, id="as-path-empty"),
    pytest.param(
        [attr(2, seg(2, 65001, 4200000001))],
        True,
        {"as_path": ((2, (65001, 4200000001)),)},
        id="as-path-4octet",
    ),
    pytest.param(
        [attr(2, seg(2, 65001, 65100, wide=False))],
        False,
        {"as_path": ((2, (65001, 65100)),)},
        id="as-path-2octet",
    ),
    pytest.param(
        [attr(2, seg(2, 65001, 65100) + seg(1, 65201, 65202))],
        True,
        {"as_path": ((2, (65001, 65100)), (1, (65201, 65202)))},
        id="as-path-set",
    ),
    pytest.param(
        [attr(2, seg(3, 64512, 64513) + seg(4, 64514) + seg(2, 65001))],
        True,
        {"as_path": ((3, (64512, 64513)), (4, (64514,)), (2, (65001,)))},
        id="as-path-confed",
    ),
    pytest.param(
        [attr(2, seg(2, *range(65000, 65255)) + seg(2, 1, 2))],
        True,
        {"as_path": ((2, tuple(range(65000, 65255))), (2, (1, 2)))},
        id="as-path-255-extended-length",
    ),
    pytest.param([attr(3, ip("198.51.100.1"))], True, {"next_hop": "198.51.100.1"}, id="next-hop"),
    pytest.param([attr(4, u32(4294967295))], True, {"med": 4294967295}, id="med"),
    pytest.param([attr(5, u32(100))], True, {"local_pref": 100}, id="local-pref"),
    pytest.param([attr(6, b"")], True, {"atomic_aggregate": True}, id="atomic-aggregate"),
    pytest.param(
        [attr(7, u32(4200000001) + ip("192.0.2.9"))],
        True,
        {"aggregator": (4200000001, "192.0.2.9")},
        id="aggr-4",
    ),
    pytest.param(
        [attr(7, struct.pack(">H", 65001) + ip("192.0.2.9"))],
        False,
        {"aggregator": (65001, "192.0.2.9")},
        id="aggr-2",
    ),
    pytest.param(
        [attr(8, struct.pack(">4H", 65001, 100, 65535, 65281))],
        True,
        {"communities": ((65001, 100), (65535, 65281))},
        id="communities",
    ),
    pytest.param(
        [attr(8, struct.pack(">2H", 65001, 1) * 200, extended=True)],
        True,
        {"communities": ((65001, 1),) * 200},
        id="communities-extended-length",
    ),
    pytest.param(
        [attr(9, ip("10.0.0.1"))], True, {"originator_id": "10.0.0.1"}, id="originator-id"
    ),
    pytest.param(
        [attr(10, ip("10.0.0.1") + ip("10.0.0.2"))],
        True,
        {"cluster_list": ("10.0.0.1", "10.0.0.2")},
        id="cluster",
    ),
    pytest.param(
        [attr(16, ext(0, 2, 0xFD, 0xE9, 0, 0, 0, 1) + ext(0x43, 0, 0, 0, 0, 0, 0, 0))],
        True,
        {"ext_communities": (ext(0, 2, 0xFD, 0xE9, 0, 0, 0, 1), ext(0x43, 0, 0, 0, 0, 0, 0, 0))},
        id="ext-communities",
    ),
    pytest.param(
        [attr(32, struct.pack(">6I", 4200000001, 1, 1, 65001, 2, 3))],
        True,
        {"large_communities": ((4200000001, 1, 1), (65001, 2, 3))},
        id="large-communities",
    ),
    pytest.param(
        [attr(32, struct.pack(">3I", 65001, 7, 8) * 100)],
        True,
        {"large_communities": ((65001, 7, 8),) * 100},
        id="large-communities-many",
    ),
    pytest.param([attr(35, u32(65001))], True, {"only_to_customer": 65001}, id="only-to-customer"),
    pytest.param(
        [attr(26, struct.pack(">BHQ", 1, 11, 2**40 + 5))], True, {"aigp": 2**40 + 5}, id="aigp"
    ),
    pytest.param(
        [attr(26, struct.pack(">BH", 7, 5) + b"xy" + struct.pack(">BHQ", 1, 11, 20))],
        True,
        {"aigp": 20},
        id="aigp-other-tlv-skipped",
    ),
    pytest.param([attr(26, b"")], True, {"aigp": None, "discarded": ()}, id="aigp-empty"),
    pytest.param(
        [attr(22, bytes.fromhex("0006000027750a00000b"))],
        True,
        {"unknown": ((22, 0xC0, "0006000027750a00000b"),)},
        id="pmsi-tunnel-as-unknown",
    ),
    pytest.param(
        [attr(99, b"\x01\x02", flags=0xE0), attr(200, b"\xaa" * 300, flags=0x80)],
        True,
        {"unknown": ((99, 0xE0, "0102"), (200, 0x90, "aa" * 300))},
        id="unknown-with-flags",
    ),
    pytest.param(
        [
            attr(1, b"\x00"),
            attr(2, b"\x02\x01\x00\x00\xfd\xe9", extended=True),
            attr(3, ip("192.0.2.1"), flags=0x50),
        ],
        True,
        {"origin": 0, "as_path": ((2, (65001,)),), "next_hop": "192.0.2.1"},
        id="extended-length-on-short-values",
    ),
]


@pytest.mark.parametrize("attrs, four, expected", VALID)
def test_valid_attributes(attrs, four, expected):
    result = decode(*attrs, four=four)
    assert isinstance(result, Attributes)
    for field, value in expected.items():
        assert getattr(result, field) == value, field
    if "discarded" not in expected:
        assert result.discarded == ()


def test_full_update_and_defaults():
    result = decode(
        ORIGIN_IGP,
        attr(2, seg(2, 65001, 65100)),
        NEXT_HOP,
        attr(4, u32(10)),
        attr(8, struct.pack(">2H", 65001, 1)),
        attr(32, struct.pack(">3I", 4200000001, 1, 1)),
        attr(16, ext(0, 2, 0xFD, 0xE9, 0, 0, 0, 1)),
    )
    assert result == Attributes(
        origin=0,
        as_path=((2, (65001, 65100)),),
        next_hop="192.0.2.1",
        med=10,
        communities=((65001, 1),),
        large_communities=((4200000001, 1, 1),),
        ext_communities=(ext(0, 2, 0xFD, 0xE9, 0, 0, 0, 1),),
    )
    assert build_attributes([], True) == Attributes()


def test_values_are_hashable_and_accept_memoryview():
    block = (
        ORIGIN_IGP
        + PATH_65001
        + NEXT_HOP
        + attr(16, ext(3, 0x0C, 0, 0, 0, 0, 0, 8))
        + attr(99, b"\x01")
    )
    from_bytes = build_attributes(walk(block), True)
    view = memoryview(block)
    from_view = build_attributes(
        [(c, f, view[o : o + len(v)], o) for c, f, v, o in walk(block)], True
    )
    assert from_view == from_bytes
    assert type(from_view.ext_communities[0]) is bytes
    hash(from_bytes)


# ---------------------------------------------------------------------------
# RFC 7606 treat-as-withdraw: (attributes, four_octet_as, subcode, offset of the error)
# Each case follows a 4-octet attribute (ORIGIN, or an unknown one before a bad
# ORIGIN), so the bad value starts at offset 7
# (or 8 with the extended-length flag).

WITHDRAW = [
    pytest.param(attr(1, b""), True, 5, 7, id="origin-empty"),
    pytest.param(attr(1, b"\x00\x00"), True, 5, 7, id="origin-long"),
    pytest.param(attr(1, b"\x03"), True, 6, 7, id="origin-undefined"),
    pytest.param(attr(2, b"\x02"), True, 11, 7, id="as-path-lone-octet"),
    pytest.param(attr(2, seg(2, 65001) + b"\x02"), True, 11, 13, id="as-path-trailing-octet"),
    pytest.param(attr(2, b"\x02\x00"), True, 11, 7, id="as-path-zero-segment"),
    pytest.param(attr(2, b"\x05\x01\x00\x00\xfd\xe9"), True, 11, 7, id="as-path-unknown-segment"),
    pytest.param(attr(2, b"\x02\x02\x00\x00\xfd\xe9"), True, 11, 7, id="as-path-overrun"),
    pytest.param(
        attr(2, seg(2, 65001, 65002, 65003)), False, 11, 15, id="as-path-4octet-on-2octet-session"
    ),
    pytest.param(
        attr(2, seg(2, 65001, 65002, wide=False)),
        True,
        11,
        7,
        id="as-path-2octet-on-4octet-session",
    ),
    pytest.param(
        attr(2, seg(2, 65001) + b"\x02\x02\x00", extended=True),
        True,
        11,
        14,
        id="as-path-overrun-ext",
    ),
    pytest.param(attr(3, ip("192.0.2.1")[:3]), True, 5, 7, id="next-hop-short"),
    pytest.param(attr(3, bytes(16)), True, 5, 7, id="next-hop-ipv6"),
    pytest.param(attr(4, b"\x00\x00\x00"), True, 5, 7, id="med-short"),
    pytest.param(attr(4, bytes(8)), True, 5, 7, id="med-long"),
    pytest.param(attr(5, b""), True, 5, 7, id="local-pref-empty"),
    pytest.param(attr(5, bytes(5)), True, 5, 7, id="local-pref-long"),
    pytest.param(attr(8, b""), True, 5, 7, id="communities-empty"),
    pytest.param(attr(8, bytes(6)), True, 5, 7, id="communities-not-multiple"),
    pytest.param(attr(8, bytes(258)), True, 5, 8, id="communities-not-multiple-ext"),
    pytest.param(attr(9, bytes(3)), True, 5, 7, id="originator-id-short"),
    pytest.param(attr(10, b""), True, 5, 7, id="cluster-list-empty"),
    pytest.param(attr(10, bytes(6)), True, 5, 7, id="cluster-list-not-multiple"),
    pytest.param(attr(16, b""), True, 5, 7, id="ext-communities-empty"),
    pytest.param(attr(16, bytes(12)), True, 5, 7, id="ext-communities-not-multiple"),
    pytest.param(attr(32, b""), True, 5, 7, id="large-communities-empty"),
    pytest.param(attr(32, bytes(16)), True, 5, 7, id="large-communities-not-multiple"),
    pytest.param(attr(35, bytes(2)), True, 5, 7, id="only-to-customer-short"),
]


@pytest.mark.parametrize("bad, four, subcode, offset", WITHDRAW)
def test_treat_as_withdraw(bad, four, subcode, offset):
    with pytest.raises(BgpError) as caught:
        decode(ORIGIN_IGP if bad[1] != 1 else attr(99, b"\x00"), bad, four=four)
    error = caught.value
    assert (error.code, error.subcode) == (3, subcode)
    assert error.offset == offset
    assert "treat-as-withdraw" in error.message


def test_withdraw_offset_counts_from_caller_buffer():
    with pytest.raises(BgpError) as caught:
        decode(attr(4, bytes(3)), base=1000)
    assert caught.value.offset == 1003


# ---------------------------------------------------------------------------
# RFC 7606 attribute discard: (attributes, four_octet_as, field, value kept, words in the note)

DISCARD = [
    pytest.param(
        [attr(6, b"\x00")],
        True,
        "atomic_aggregate",
        False,
        "ATOMIC_AGGREGATE",
        id="atomic-aggr-len",
    ),
    pytest.param(
        [attr(7, bytes(6))], True, "aggregator", None, "AGGREGATOR", id="aggregator-6-on-4octet"
    ),
    pytest.param(
        [attr(7, bytes(8))], False, "aggregator", None, "AGGREGATOR", id="aggregator-8-on-2octet"
    ),
    pytest.param([attr(7, b"")], True, "aggregator", None, "AGGREGATOR", id="aggregator-empty"),
    pytest.param(
        [attr(26, struct.pack(">BHI", 1, 7, 5))], True, "aigp", None, "AIGP", id="aigp-tlv-short"
    ),
    pytest.param(
        [attr(26, struct.pack(">BHQ", 1, 12, 5))], True, "aigp", None, "AIGP", id="aigp-tlv-overrun"
    ),
    pytest.param([attr(26, b"\x01\x00")], True, "aigp", None, "AIGP", id="aigp-truncated-header"),
    pytest.param(
        [attr(26, struct.pack(">BH", 9, 2))], True, "aigp", None, "AIGP", id="aigp-tlv-len-below-3"
    ),
    pytest.param(
        [attr(26, struct.pack(">BHQ", 1, 11, 5) * 2)],
        True,
        "aigp",
        None,
        "more than one",
        id="aigp-two-tlvs",
    ),
    pytest.param(
        [attr(2, seg(2, 65001)), attr(17, seg(2, 65001))],
        True,
        "as_path",
        ((2, (65001,)),),
        "AS4_PATH",
        id="as4-path-on-4octet-session",
    ),
    pytest.param(
        [attr(7, u32(65001) + ip("192.0.2.9")), attr(18, u32(65002) + ip("192.0.2.8"))],
        True,
        "aggregator",
        (65001, "192.0.2.9"),
        "AS4_AGGREGATOR",
        id="as4-aggregator-on-4octet-session",
    ),
]


@pytest.mark.parametrize("attrs, four, field, kept, words", DISCARD)
def test_attribute_discard(attrs, four, field, kept, words):
    result = decode(ORIGIN_IGP, *attrs, four=four)
    assert getattr(result, field) == kept
    assert result.origin == 0  # the UPDATE goes on
    assert len(result.discarded) == 1
    assert words in result.discarded[0]


def test_duplicates_keep_the_first():
    result = decode(
        ORIGIN_IGP,
        attr(1, b"\x07"),  # would be treat-as-withdraw if it were decoded
        attr(4, u32(10)),
        attr(4, u32(20)),
        attr(99, b"\x01"),
        attr(99, b"\x02"),
    )
    assert result.origin == 0
    assert result.med == 10
    assert result.unknown == ((99, 0xC0, "01"),)
    assert len(result.discarded) == 3
    assert all("duplicate" in note for note in result.discarded)
    assert "ORIGIN" in result.discarded[0] and "MULTI_EXIT_DISC" in result.discarded[1]


# ---------------------------------------------------------------------------
# RFC 6793 §4.2.3 on a 2-octet session: (attributes, as_path, aggregator, notes)

T = AS_TRANS
AGGR_TRANS = attr(7, struct.pack(">H", T) + ip("192.0.2.9"))
AGGR_2 = attr(7, struct.pack(">H", 65010) + ip("192.0.2.9"))
AS4_AGGR = attr(18, u32(4200000009) + ip("192.0.2.10"))

AS4 = [
    pytest.param(
        [attr(2, seg(2, 65010, 65001, T, wide=False)), attr(17, seg(2, 65001, 4200000001))],
        ((2, (65010, 65001, 4200000001)),),
        None,
        0,
        id="merge-prepends-old-speakers",
    ),
    pytest.param(
        [attr(2, seg(2, T, T, wide=False)), attr(17, seg(2, 4200000001, 4200000002))],
        ((2, (4200000001, 4200000002)),),
        None,
        0,
        id="merge-equal-length",
    ),
    pytest.param(
        [
            attr(2, seg(2, 65010, T, wide=False) + seg(1, T, 65020, wide=False)),
            attr(17, seg(2, 4200000001) + seg(1, 4200000002, 65020)),
        ],
        ((2, (65010, 4200000001)), (1, (4200000002, 65020))),
        None,
        0,
        id="merge-with-set",
    ),
    pytest.param(
        [
            attr(2, seg(3, 64512, wide=False) + seg(2, 65010, T, wide=False)),
            attr(17, seg(2, 4200000001)),
        ],
        ((3, (64512,)), (2, (65010, 4200000001))),
        None,
        0,
        id="merge-keeps-leading-confed",
    ),
    pytest.param(
        [
            attr(2, seg(1, 65010, 65011, wide=False) + seg(2, T, wide=False)),
            attr(17, seg(2, 4200000001)),
        ],
        ((1, (65010, 65011)), (2, (4200000001,))),
        None,
        0,
        id="merge-keeps-leading-set",
    ),
    pytest.param(
        [attr(2, seg(2, T, wide=False)), attr(17, seg(2, 4200000001, 4200000002))],
        ((2, (T,)),),
        None,
        1,
        id="as4-path-longer-ignored",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, T, wide=False)), attr(17, seg(3, 64512) + seg(2, 4200000001))],
        ((2, (65010, 4200000001)),),
        None,
        1,
        id="as4-path-confed-removed",
    ),
    pytest.param(
        [attr(2, seg(2, T, wide=False)), attr(17, b"\x02\x01\x00\x00")],
        ((2, (T,)),),
        None,
        1,
        id="as4-path-too-short-discarded",
    ),
    pytest.param(
        [attr(2, seg(2, T, wide=False)), attr(17, seg(2, 4200000001) + b"\x02\x00")],
        ((2, (T,)),),
        None,
        1,
        id="as4-path-zero-segment-discarded",
    ),
    pytest.param(
        [attr(2, seg(2, T, wide=False)), attr(17, b"\x09\x01" + u32(4200000001))],
        ((2, (T,)),),
        None,
        1,
        id="as4-path-bad-segment-type-discarded",
    ),
    pytest.param(
        [attr(2, seg(2, T, wide=False)), attr(17, b"\x02\x02" + u32(4200000001))],
        ((2, (T,)),),
        None,
        1,
        id="as4-path-overrun-discarded",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, T, wide=False)), AGGR_TRANS, AS4_AGGR, attr(17, seg(2, 4200000001))],
        ((2, (65010, 4200000001)),),
        (4200000009, "192.0.2.10"),
        0,
        id="as4-aggregator-replaces-as-trans",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, T, wide=False)), AGGR_2, AS4_AGGR, attr(17, seg(2, 4200000001))],
        ((2, (65010, T)),),
        (65010, "192.0.2.9"),
        1,
        id="aggregator-not-as-trans-ignores-as4",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, T, wide=False)), AGGR_2, attr(17, seg(2, 4200000001))],
        ((2, (65010, 4200000001)),),
        (65010, "192.0.2.9"),
        0,
        id="aggregator-alone-path-still-merged",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, wide=False)), AS4_AGGR],
        ((2, (65010,)),),
        None,
        1,
        id="as4-aggregator-alone",
    ),
    pytest.param(
        [attr(2, seg(2, 65010, wide=False)), AGGR_TRANS, attr(18, bytes(6))],
        ((2, (65010,)),),
        (T, "192.0.2.9"),
        1,
        id="as4-aggregator-bad-length",
    ),
    pytest.param(
        [attr(17, seg(2, 4200000001))],
        (),
        None,
        1,
        id="as4-path-without-as-path",
    ),
]


@pytest.mark.parametrize("attrs, as_path, aggregator, notes", AS4)
def test_as4_merge_on_2octet_session(attrs, as_path, aggregator, notes):
    result = decode(*attrs, four=False)
    assert result.as_path == as_path
    assert result.aggregator == aggregator
    assert len(result.discarded) == notes, result.discarded
    assert result.unknown == ()


def test_as4_merge_text():
    result = decode(
        attr(2, seg(2, 65010, 65001, T, T, wide=False)),
        attr(17, seg(2, 65001, 4200000001, 65100)),
        four=False,
    )
    assert as_path_text(result.as_path) == "65010 65001 4200000001 65100"
    assert origin_as(result.as_path) == 65100


# ---------------------------------------------------------------------------
# Renderers

PATHS = [
    ((), "", [], None),
    (((2, (65001,)),), "65001", [65001], 65001),
    (((2, (65001, 65100)),), "65001 65100", [65001, 65100], 65100),
    (
        ((2, (65001, 65100)), (1, (65201, 65202))),
        "65001 65100 {65201,65202}",
        [65001, 65100, [65201, 65202]],
        None,
    ),
    (
        ((3, (64512, 64513)), (4, (64514, 64515)), (2, (65001, 4200000001))),
        "(64512 64513) [64514,64515] 65001 4200000001",
        [{"confed_sequence": [64512, 64513]}, {"confed_set": [64514, 64515]}, 65001, 4200000001],
        4200000001,
    ),
    (((3, (64512,)),), "(64512)", [{"confed_sequence": [64512]}], None),
]


@pytest.mark.parametrize("path, text, listed, origin", PATHS)
def test_as_path_renderers(path, text, listed, origin):
    assert as_path_text(path) == text
    assert as_path_list(path) == listed
    assert origin_as(path) == origin
    json.dumps(as_path_list(path))


EXT_COMMUNITIES = [
    ("0002fde900000001", "rt:65001:1"),
    ("0003fde900000007", "soo:65001:7"),
    ("4002fde900000001", "rt:65001:1"),
    ("0102c00002010002", "rt:192.0.2.1:2"),
    ("0103c00002010010", "soo:192.0.2.1:16"),
    ("0202fa56ea010005", "rt:4200000001:5"),
    ("0203fa56ea010007", "soo:4200000001:7"),
    ("030c000000000008", "encap:vxlan"),
    ("030c000000000009", "encap:nvgre"),
    ("030c00000000000a", "encap:mpls"),
    ("030c00000000000b", "encap:mpls_gre"),
    ("030c00000000000c", "encap:vxlan_gpe"),
    ("030c000000000013", "encap:geneve"),
    ("030c0000000003e7", "encap:999"),
    ("030b000000000064", "color:100"),
    ("030d000000000000", "default_gateway"),
    ("4300000000000000", "origin_validation:valid"),
    ("4300000000000001", "origin_validation:not_found"),
    ("4300000000000002", "origin_validation:invalid"),
    ("4300000000000003", "0x43:0x00:000000000003"),
    ("0600000000000005", "mac_mobility:5"),
    ("0600010000000007", "mac_mobility:7:sticky"),
    ("0601000000002775", "esi_label:10101"),
    ("0601010000002775", "esi_label:10101:single_active"),
    ("0602aabbcc000001", "es_import:aa:bb:cc:00:00:01"),
    ("0603aabbcc000099", "router_mac:aa:bb:cc:00:00:99"),
    ("4004fde94e9502f9", "link_bw:65001:1250000000"),
    ("8006000000000000", "0x80:0x06:000000000000"),
    ("0002", "invalid:0002"),
]


@pytest.mark.parametrize("raw, text", EXT_COMMUNITIES)
def test_format_ext_community(raw, text):
    assert format_ext_community(bytes.fromhex(raw)) == text


def test_format_communities():
    assert format_community((65001, 100)) == "65001:100"
    assert format_community((65535, 65281)) == "65535:65281"
    assert format_large_community((4200000002, 4294967295, 2)) == "4200000002:4294967295:2"


# ---------------------------------------------------------------------------
# Real captures: pre-policy route monitoring from GoBGP carries the UPDATEs
# exactly as the source sent them, so every decoded route must render as the
# manifest's expected_on_wire.


def _bmp_updates(path):
    """(peer address, flags, UPDATE body) of every Route Monitoring message."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        length, msg_type = struct.unpack_from(">IB", data, pos + 1)
        if msg_type == 0:
            peer = data[pos + 6 : pos + 48]
            address = socket.inet_ntop(socket.AF_INET, peer[22:26]) if not peer[1] & 0x80 else None
            yield address, peer[1], data[pos + 48 + 19 : pos + length]
        pos += length


def _prefixes(data, afi):
    size = 4 if afi == 1 else 16
    family = socket.AF_INET if afi == 1 else socket.AF_INET6
    pos = 0
    while pos < len(data):
        bits = data[pos]
        octets = (bits + 7) // 8
        address = data[pos + 1 : pos + 1 + octets].ljust(size, b"\0")
        yield f"{socket.inet_ntop(family, address)}/{bits}"
        pos += 1 + octets


def _announced(body):
    """(prefixes, items) of one UPDATE body, IPv4/IPv6 unicast only."""
    withdrawn_len = struct.unpack_from(">H", body)[0]
    attrs_len = struct.unpack_from(">H", body, 2 + withdrawn_len)[0]
    start = 4 + withdrawn_len
    items = walk(body[start : start + attrs_len], start)
    prefixes = list(_prefixes(body[start + attrs_len :], 1))
    for code, _flags, value, _offset in items:
        if code == 14 and value[:3] == b"\x00\x02\x01":
            nh_len = value[3]
            prefixes += _prefixes(value[5 + nh_len :], 2)
    return prefixes, [item for item in items if item[0] not in (14, 15)]


def _rendered(attributes, family):
    out = {"as_path": as_path_text(attributes.as_path)}
    if attributes.origin is not None:
        out["origin"] = name_of(Origin, attributes.origin)
    if family == "ipv4_unicast":
        out["next_hop"] = attributes.next_hop
    for field in ("med", "local_pref"):
        if getattr(attributes, field) is not None:
            out[field] = getattr(attributes, field)
    if attributes.communities:
        out["communities"] = [format_community(c) for c in attributes.communities]
    if attributes.large_communities:
        out["large_communities"] = [format_large_community(c) for c in attributes.large_communities]
    if attributes.ext_communities:
        out["ext_communities"] = [format_ext_community(c) for c in attributes.ext_communities]
    return out


@pytest.mark.parametrize(
    "capture, minimum", [("gobgp-pre-policy-small-1", 40), ("gobgp-all-1", 350)]
)
def test_corpus_pre_policy_matches_manifest(capture, minimum):
    manifest_path = CORPUS / f"{capture}.json"
    if not manifest_path.exists():
        pytest.skip("corpus not present")
    manifest = json.loads(manifest_path.read_text())
    peers = {
        name: info["address"]
        for name, info in manifest["topology"].items()
        if name.startswith("src")
    }
    seen = {}
    for address, flags, body in _bmp_updates(CORPUS / f"{capture}.bmp"):
        if flags & 0x40 or address not in peers.values():
            continue  # post-policy, or not one of the sources
        prefixes, items = _announced(body)
        if not prefixes:
            continue
        attributes = build_attributes(items, True)
        assert attributes.discarded == () and attributes.unknown == ()
        for prefix in prefixes:
            seen.setdefault((address, prefix), []).append(attributes)
    checked = 0
    for phase in ("announce", "reannounce"):
        for source, routes in manifest["routes"][phase].items():
            for route in routes:
                if route["family"] not in ("ipv4_unicast", "ipv6_unicast"):
                    continue
                decoded = seen.get((peers[source], route["prefix"]))
                if decoded is None:
                    continue  # never announced pre-policy (e.g. a martian the router dropped)
                expected = dict(route["expected_on_wire"])
                if route["family"] != "ipv4_unicast":
                    del expected["next_hop"]  # in MP_REACH_NLRI, not decoded here
                renderings = [_rendered(a, route["family"]) for a in decoded]
                assert expected in renderings, (route["prefix"], renderings)
                checked += 1
    assert checked >= minimum


@pytest.mark.parametrize("four", [True, False])
def test_random_values_raise_only_bgp_errors(four):
    """Whatever the bytes, the decoder returns Attributes or raises BgpError."""
    rng = random.Random(7606)
    codes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 22, 26, 32, 35, 99]
    for _ in range(3000):
        items = []
        for code in rng.sample(codes, rng.randint(1, 5)):
            value = bytes(
                rng.getrandbits(8) for _ in range(rng.choice((0, 1, 2, 4, 6, 8, 11, 12, 30)))
            )
            if code in (2, 17) and rng.random() < 0.5:
                wide = code == 17 or four
                asns = [rng.choice((AS_TRANS, 65001, 4200000001 if wide else 65002)) for _ in "abc"]
                value = seg(rng.randint(1, 4), *asns, wide=wide)
            items.append((code, 0xC0, value, 0))
        try:
            result = build_attributes(items, four)
        except BgpError as error:
            assert error.code == 3 and error.subcode in (5, 6, 11)
        else:
            assert isinstance(result, Attributes)
            as_path_text(result.as_path)
            for raw in result.ext_communities:
                format_ext_community(raw)
