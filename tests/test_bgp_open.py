"""OPEN body and capabilities (pybmpmon.bgp.open): wire bytes -> Open."""

import struct

import pytest

from pybmpmon.bgp.model import Capability, Open
from pybmpmon.bgp.open import decode_open
from pybmpmon.errors import BgpError, ContentError


# --- builders ------------------------------------------------------------------


def cap(code: int, value: bytes = b"") -> bytes:
    return bytes([code, len(value)]) + value


def param(ptype: int, value: bytes) -> bytes:
    return bytes([ptype, len(value)]) + value


def caps(*capabilities: bytes) -> bytes:
    """One capabilities optional parameter holding all *capabilities*."""
    return param(2, b"".join(capabilities))


def body(params: bytes = b"", my_as=65001, hold=90, bgp_id=(192, 0, 2, 1), version=4) -> bytes:
    return struct.pack(">BHH4sB", version, my_as, hold, bytes(bgp_id), len(params)) + params


def ext_body(params: bytes, my_as=65001) -> bytes:
    """RFC 9072 form: length 255, type 255, 2-byte length, 2-byte parameter lengths."""
    return (
        struct.pack(">BHH4sBBH", 4, my_as, 180, bytes([10, 0, 0, 1]), 255, 255, len(params))
        + params
    )


def ext_param(ptype: int, value: bytes) -> bytes:
    return struct.pack(">BH", ptype, len(value)) + value


def decode(data: bytes) -> Open:
    return decode_open(data, 0, len(data))


def mp(afi, safi):
    return cap(1, struct.pack(">HBB", afi, 0, safi))


# --- fixed fields ----------------------------------------------------------------


def test_fixed_fields_without_parameters():
    assert decode(body()) == Open(4, 65001, 90, "192.0.2.1", (), ())


def test_fixed_fields_are_kept_as_sent():
    # A monitoring station reports what it saw: version 3 and hold time 0 are not errors.
    got = decode(body(version=3, my_as=23456, hold=0, bgp_id=(255, 255, 255, 255)))
    assert (got.version, got.my_as, got.hold_time, got.bgp_id) == (3, 23456, 0, "255.255.255.255")


def test_decodes_inside_a_larger_buffer():
    data = b"\xee" * 7 + body(caps(cap(2))) + b"\xee" * 5
    got = decode_open(data, 7, len(data) - 5)
    assert got.capabilities == (Capability(2, b"", None),)


# --- capability values ---------------------------------------------------------------

CAPABILITY_TABLE = [
    # (wire capability, expected Capability)
    (mp(1, 1), Capability(1, b"\x00\x01\x00\x01", (1, 1))),
    (mp(25, 70), Capability(1, b"\x00\x19\x00\x46", (25, 70))),
    (cap(2), Capability(2, b"", None)),
    (cap(128), Capability(128, b"", None)),
    (cap(70), Capability(70, b"", None)),
    (cap(6), Capability(6, b"", None)),
    (
        cap(65, struct.pack(">I", 4200000001)),
        Capability(65, struct.pack(">I", 4200000001), 4200000001),
    ),
    (
        cap(
            69,
            struct.pack(">HBB", 1, 1, 1)
            + struct.pack(">HBB", 2, 1, 2)
            + struct.pack(">HBB", 25, 70, 3),
        ),
        Capability(
            69, bytes.fromhex("000101010002010200194603"), ((1, 1, 1), (2, 1, 2), (25, 70, 3))
        ),
    ),
    (
        cap(64, bytes.fromhex("80780001018000020100")),
        Capability(
            64,
            bytes.fromhex("80780001018000020100"),
            {"restart_time": 120, "flags": 8, "families": ((1, 1, 0x80), (2, 1, 0))},
        ),
    ),
    (
        cap(64, bytes.fromhex("0000")),
        Capability(64, b"\x00\x00", {"restart_time": 0, "flags": 0, "families": ()}),
    ),
    (
        cap(5, struct.pack(">HHH", 1, 1, 2) + struct.pack(">HHH", 1, 128, 2)),
        Capability(5, bytes.fromhex("000100010002000100800002"), ((1, 1, 2), (1, 128, 2))),
    ),
    (cap(73, b"\x03r01\x07example"), Capability(73, b"\x03r01\x07example", ("r01", "example"))),
    (cap(73, b"\x03r01\x00"), Capability(73, b"\x03r01\x00", ("r01", ""))),
    (cap(73, b"\x02\xffx\x00"), Capability(73, b"\x02\xffx\x00", ("\ufffdx", ""))),
    (cap(9, b"\x03"), Capability(9, b"\x03", 3)),
    (cap(75, b"\x0bFRRouting/9"), Capability(75, b"\x0bFRRouting/9", "FRRouting/9")),
    (
        cap(71, bytes.fromhex("0001018000003c")),
        Capability(71, bytes.fromhex("0001018000003c"), None),
    ),
    (cap(200, b"\x01\x02\x03"), Capability(200, b"\x01\x02\x03", None)),
]


@pytest.mark.parametrize("wire, expected", CAPABILITY_TABLE)
def test_capability_values(wire, expected):
    assert decode(body(caps(wire))).capabilities == (expected,)


LENIENT_TABLE = [
    # Informational capabilities that are malformed keep raw bytes, value None.
    cap(73, b"\x05ab"),  # hostname overruns
    cap(73, b"\x01a"),  # domain length missing
    cap(73, b"\x01a\x00zz"),  # bytes after the domain
    cap(64, b"\x00"),  # graceful restart too short
    cap(64, b"\x00\x00\x00\x01\x01"),  # partial family
    cap(9, b""),  # role without value
    cap(75, b"\x09short"),
]


@pytest.mark.parametrize("wire", LENIENT_TABLE)
def test_malformed_informational_capability_keeps_raw(wire):
    (got,) = decode(body(caps(wire))).capabilities
    assert got == Capability(wire[0], wire[2:], None)


STRICT_TABLE = [
    # Capabilities that change UPDATE parsing must be well formed.
    cap(1, b"\x00\x01\x01"),
    cap(1, b"\x00\x01\x00\x01\x00"),
    cap(65, b"\x00\x00\xfd"),
    cap(69, b"\x00\x01\x01"),
    cap(5, b"\x00\x01\x00\x01\x00"),
]


@pytest.mark.parametrize("wire", STRICT_TABLE)
def test_malformed_parsing_capability_is_an_error(wire):
    data = body(caps(mp(1, 1), wire))
    with pytest.raises(BgpError) as info:
        decode(data)
    assert info.value.code == 2
    # The offset points at the bad capability's value: header 10 + param 2 + mp 6 + code/len 2.
    assert info.value.offset == 20


# --- optional parameters -------------------------------------------------------------


def test_several_capabilities_in_one_parameter_and_several_parameters():
    params = caps(mp(1, 1), mp(2, 1), cap(2)) + caps(cap(65, struct.pack(">I", 65001))) + caps()
    got = decode(body(params))
    assert [c.code for c in got.capabilities] == [1, 1, 2, 65]
    assert got.families == ((1, 1), (2, 1))
    assert got.four_octet_as and got.asn == 65001


def test_non_capability_parameter_goes_to_other_params():
    params = param(1, b"\x00\x05secret") + caps(cap(2)) + param(99, b"")
    got = decode(body(params))
    assert got.other_params == ((1, b"\x00\x05secret"), (99, b""))
    assert got.capabilities == (Capability(2, b"", None),)


def test_extended_optional_parameters_rfc9072():
    capability_block = b"".join(mp(1, 1) for _ in range(70)) + cap(
        65, struct.pack(">I", 4200000000)
    )
    params = ext_param(2, capability_block) + ext_param(1, b"auth")
    got = decode(ext_body(params, my_as=23456))
    assert len(got.capabilities) == 71
    assert got.asn == 4200000000 and got.my_as == 23456
    assert got.other_params == ((1, b"auth"),)


def test_length_255_without_extended_marker_is_the_classic_form():
    # 255 bytes of classic parameters whose first type is 2 (not 255).
    capability_block = b"".join(cap(200, b"x" * 60) for _ in range(4)) + cap(
        201, b"x" * 3
    )  # 4*62 + 5 = 253
    params = caps(capability_block)
    assert len(params) == 255
    got = decode(body(params))
    assert [c.code for c in got.capabilities] == [200, 200, 200, 200, 201]


def test_open_helpers():
    got = decode(
        body(
            caps(
                mp(1, 1),
                cap(69, struct.pack(">HBB", 1, 1, 3) + struct.pack(">HBB", 2, 1, 1)),
            ),
            my_as=65010,
        )
    )
    assert got.asn == 65010 and not got.four_octet_as
    assert got.add_path() == {(1, 1): 3, (2, 1): 1}


# --- malformed bodies ----------------------------------------------------------------

ERROR_TABLE = [
    # (data, offset of the error)
    (b"", 0),
    (body()[:8], 5),  # BGP identifier truncated
    (body()[:-1], 9),  # optional parameters length missing
    (body(caps(cap(2)))[:-1], 9),  # parameters shorter than declared
    (body(caps(cap(2))) + b"\x00", 9),  # bytes after the declared parameters
    (body(b"\x02\x05\x02\x00"), 12),  # declared 4, parameter claims 5
    (body(param(2, b"\x02\x03\x00")), 14),  # capability overruns its parameter
    (body(param(2, b"\x02")), 13),  # capability length missing
    (
        struct.pack(">BHH4sB", 4, 1, 90, b"\x01\x02\x03\x04", 255) + b"\xff\x00",
        11,
    ),  # ext length truncated
    (ext_body(b"")[:-1] + b"\x05", 11),  # ext length 5, nothing follows
    (ext_body(ext_param(2, b"") + b"\x02\x00"), 17),  # truncated ext parameter length
]


@pytest.mark.parametrize("data, offset", ERROR_TABLE)
def test_malformed_open(data, offset):
    with pytest.raises(BgpError) as info:
        decode(data)
    assert info.value.offset == offset
    assert info.value.code == 2


def test_every_truncation_raises_only_content_errors():
    full = body(
        caps(
            mp(1, 1),
            cap(64, bytes.fromhex("807800010180")),
            cap(73, b"\x01a\x01b"),
            cap(69, b"\x00\x01\x01\x03"),
        )
        + param(1, b"zz")
    )
    for cut in range(len(full)):
        data = full[:cut]
        try:
            decode(data)
        except ContentError:
            pass
        # Also with the optional-parameters length patched to match the cut.
        if cut > 10:
            patched = data[:9] + bytes([cut - 10]) + data[10:]
            try:
                decode(patched)
            except ContentError:
                pass
