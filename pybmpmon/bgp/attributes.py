"""BGP path attributes of an UPDATE, decoded under RFC 7606 error handling.

Implements the attribute values of RFC 4271 §4.3 and §5 (ORIGIN, AS_PATH,
NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR), RFC 5065
§3 (confederation segments), RFC 1997 (COMMUNITIES), RFC 4456 §8
(ORIGINATOR_ID, CLUSTER_LIST), RFC 4360 (EXTENDED_COMMUNITIES), RFC 6793 §4.2.3
and §6 (AS4_PATH, AS4_AGGREGATOR), RFC 8092 (LARGE_COMMUNITIES), RFC 9234 §5
(ONLY_TO_CUSTOMER) and RFC 7311 §3 (AIGP).  Malformed values are handled as
RFC 7606 §7 says for each attribute: "attribute discard" drops the attribute
and describes it in :attr:`Attributes.discarded`, "treat-as-withdraw" raises
:class:`~pybmpmon.errors.BgpError` with the UPDATE error subcode of RFC 4271
§6.3.  Duplicates follow RFC 7606 §3 (g): the first occurrence wins.

MP_REACH_NLRI and MP_UNREACH_NLRI are not handled here (see ``nlri.py``).

The ``format_*`` and ``as_path_*`` helpers render decoded values as text for
logs, JSON and database rows.
"""

from __future__ import annotations

import socket
import struct

from ..errors import BgpError
from ..iana import AS_TRANS, AsPathSegmentType, AttrType, Origin
from .model import Attributes

_new = tuple.__new__
_AF_INET = socket.AF_INET
_ntop = socket.inet_ntop

# RFC 4271 §6.3 UPDATE message error subcodes.
_ATTRIBUTE_LENGTH_ERROR = 5
_INVALID_ORIGIN = 6
_MALFORMED_AS_PATH = 11

# Strategy: a path segment holds at most 255 ASNs, so one precompiled Struct per
# count turns a whole segment into its tuple of ints in one call; the same
# tables serve (large) communities of common sizes.
_UNPACK_2 = tuple(struct.Struct(">%dH" % n) for n in range(256))
_UNPACK_4 = tuple(struct.Struct(">%dI" % n) for n in range(256))
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_AGGREGATOR_2 = struct.Struct(">H4s")
_AGGREGATOR_4 = struct.Struct(">I4s")

_AS_SEQUENCE = AsPathSegmentType.AS_SEQUENCE
_SEGMENT_TYPES = {int(t): t for t in AsPathSegmentType}
_ORIGINS = (Origin.IGP, Origin.EGP, Origin.INCOMPLETE)

_RFC6793_6 = "RFC 6793 §6"
_AIGP_TLV = 1  # RFC 7311 §3: the only TLV type defined


def _attr_name(code: int) -> str:
    try:
        return f"{AttrType(code).name} ({code})"
    except ValueError:
        return f"attribute type {code}"


def _withdraw(name: str, message: str, offset: int, subcode: int) -> BgpError:
    return BgpError(f"{name}: {message} (treat-as-withdraw)", offset, 3, subcode)


def _discard(name: str, why: str, rfc: str) -> str:
    return f"{name}: {why}: attribute discarded ({rfc})"


def _length_error(name: str, length: int, expected: str, offset: int) -> BgpError:
    return _withdraw(name, f"length {length}, expected {expected}", offset, _ATTRIBUTE_LENGTH_ERROR)


def _parse_path(value: bytes, wide: bool) -> tuple:
    """Segments of an AS_PATH or AS4_PATH value (RFC 4271 §4.3, RFC 7606 §7.2).

    Returns ``(segments, None)``, or ``(None, (reason, position))`` for an
    unknown segment type, a zero-length segment, an overrun, or a lone octet
    after the last segment: the two attributes need different reactions.
    """
    table = _UNPACK_4 if wide else _UNPACK_2
    size = 4 if wide else 2
    end = len(value)
    pos = 0
    segments = []
    while pos < end:
        if pos + 2 > end:
            return None, ("one octet left after the last segment", pos)
        seg_type = _SEGMENT_TYPES.get(value[pos])
        count = value[pos + 1]
        if seg_type is None:
            return None, (f"unknown segment type {value[pos]}", pos)
        if count == 0:
            return None, ("segment of length zero", pos)
        nxt = pos + 2 + count * size
        if nxt > end:
            return None, (
                f"segment of {count} ASNs overruns the attribute ({end - pos - 2} octets left)",
                pos,
            )
        segments.append((seg_type, table[count].unpack_from(value, pos + 2)))
        pos = nxt
    return tuple(segments), None


def _path_length(segments: tuple) -> int:
    """AS count for route selection (RFC 4271 §9.1.2.2, RFC 5065 §5.3)."""
    n = 0
    for seg_type, asns in segments:
        if seg_type == 2:
            n += len(asns)
        elif seg_type == 1:
            n += 1
    return n


def _merge_as4_path(as_path: tuple, as4_path: tuple) -> tuple | None:
    """The real path from AS_PATH and AS4_PATH (RFC 6793 §4.2.3).

    None when AS4_PATH is longer than AS_PATH, in which case it is ignored.
    The leading ASNs of AS_PATH that AS4_PATH lacks (added by speakers without
    4-octet support) are kept in front of AS4_PATH; confederation segments are
    kept when they lead or touch a kept segment.
    """
    need = _path_length(as_path) - _path_length(as4_path)
    if need < 0:
        return None
    head = []
    touching = False  # the previous segment was kept whole, so a confed one after it touches it
    for index, (seg_type, asns) in enumerate(as_path):
        if seg_type >= 3:
            # With need > 0 the next ordinary segment is kept and touches this one.
            touching = index == 0 or touching or need > 0
            if touching:
                head.append((seg_type, asns))
            continue
        if need <= 0:
            break
        touching = True
        if seg_type == 2:
            if len(asns) > need:
                asns = asns[:need]
                touching = False
            need -= len(asns)
        else:
            need -= 1
        head.append((seg_type, asns))
    merged = list(as4_path)
    if head and merged and head[-1][0] == 2 and merged[0][0] == 2:
        # One sequence split across the two attributes reads as one segment.
        merged[0] = (_AS_SEQUENCE, head.pop()[1] + merged[0][1])
    return tuple(head) + tuple(merged)


def _parse_as4_path(value: bytes) -> tuple:
    """(segments, note) per RFC 6793 §6: segments None when discarded as
    malformed; note describes a discard or the removal of confederation
    segments, which must not appear in AS4_PATH."""
    length = len(value)
    if length < 6 or length % 2:
        return None, _discard(
            "AS4_PATH (17)", f"length {length}, expected even and >= 6", _RFC6793_6
        )
    segments, error = _parse_path(value, True)
    if error is not None:
        return None, _discard("AS4_PATH (17)", f"{error[0]} at octet {error[1]}", _RFC6793_6)
    clean = tuple(seg for seg in segments if seg[0] <= 2)
    if len(clean) != len(segments):
        return clean, "AS4_PATH (17): confederation segments removed (RFC 6793 §6)"
    return segments, None


def _parse_aigp(value: bytes) -> tuple[int | None, str | None]:
    """(metric, None) or (None, why it was discarded) per RFC 7311 §3."""
    metric = None
    end = len(value)
    pos = 0
    while pos < end:
        if pos + 3 > end:
            return None, "truncated TLV header"
        tlv_type = value[pos]
        tlv_len = _U16.unpack_from(value, pos + 1)[0]  # includes the 3-octet header
        if tlv_len < 3 or pos + tlv_len > end:
            return None, f"TLV length {tlv_len} does not fit the attribute"
        if tlv_type == _AIGP_TLV:
            if tlv_len != 11:
                return None, f"AIGP TLV length {tlv_len}, expected 11"
            if metric is not None:
                return None, "more than one AIGP TLV"
            metric = _U64.unpack_from(value, pos + 3)[0]
        pos += tlv_len
    return metric, None


def build_attributes(items: list, four_octet_as: bool, wire: bytes = b"") -> Attributes:
    """Decode the path attributes of one UPDATE.

    *items* are ``(type_code, flags, value, value_offset)`` in wire order,
    MP_REACH_NLRI and MP_UNREACH_NLRI excluded; *value_offset* is where the
    value starts in the buffer the caller decodes, used for error offsets.
    *four_octet_as* says whether both OPENs carried the 4-octet AS capability
    (RFC 6793); without it AS_PATH and AGGREGATOR hold 2-octet ASNs and
    AS4_PATH/AS4_AGGREGATOR are merged into them.  *wire* becomes
    :attr:`Attributes.wire`.
    """
    origin = None
    as_path = ()
    next_hop = None
    med = None
    local_pref = None
    atomic_aggregate = False
    aggregator = None
    communities = ()
    originator_id = None
    cluster_list = ()
    ext_communities = ()
    large_communities = ()
    only_to_customer = None
    aigp = None
    unknown = []
    discarded = []
    as4_path = None
    as4_aggregator = None
    seen = set()

    for code, flags, value, offset in items:
        if code in seen:
            discarded.append(f"{_attr_name(code)}: duplicate attribute discarded (RFC 7606 §3 g)")
            continue
        seen.add(code)
        length = len(value)

        if code == 1:  # ORIGIN, RFC 7606 §7.1
            if length != 1:
                raise _length_error("ORIGIN (1)", length, "1", offset)
            if value[0] > 2:
                raise _withdraw(
                    "ORIGIN (1)", f"undefined value {value[0]}", offset, _INVALID_ORIGIN
                )
            origin = _ORIGINS[value[0]]
        elif code == 2:  # AS_PATH, RFC 7606 §7.2
            as_path, error = _parse_path(value, four_octet_as)
            if error is not None:
                raise _withdraw("AS_PATH (2)", error[0], offset + error[1], _MALFORMED_AS_PATH)
        elif code == 3:  # NEXT_HOP, RFC 7606 §7.3
            if length != 4:
                raise _length_error("NEXT_HOP (3)", length, "4", offset)
            next_hop = _ntop(_AF_INET, value)
        elif code == 4:  # MULTI_EXIT_DISC, RFC 7606 §7.4
            if length != 4:
                raise _length_error("MULTI_EXIT_DISC (4)", length, "4", offset)
            med = _U32.unpack_from(value)[0]
        elif code == 5:  # LOCAL_PREF, RFC 7606 §7.5
            if length != 4:
                raise _length_error("LOCAL_PREF (5)", length, "4", offset)
            local_pref = _U32.unpack_from(value)[0]
        elif code == 8:  # COMMUNITIES, RFC 7606 §7.8
            if length == 0 or length % 4:
                raise _length_error("COMMUNITIES (8)", length, "a non-zero multiple of 4", offset)
            count = length >> 1
            if count < 256:
                flat = _UNPACK_2[count].unpack_from(value)
            else:
                flat = struct.unpack_from(">%dH" % count, value)
            communities = tuple(zip(flat[0::2], flat[1::2]))
        elif code == 32:  # LARGE_COMMUNITIES, RFC 8092 §6
            if length == 0 or length % 12:
                raise _length_error(
                    "LARGE_COMMUNITIES (32)", length, "a non-zero multiple of 12", offset
                )
            count = length >> 2
            if count < 256:
                flat = _UNPACK_4[count].unpack_from(value)
            else:
                flat = struct.unpack_from(">%dI" % count, value)
            large_communities = tuple(zip(flat[0::3], flat[1::3], flat[2::3]))
        elif code == 16:  # EXTENDED_COMMUNITIES, RFC 7606 §7.14
            if length == 0 or length % 8:
                raise _length_error(
                    "EXTENDED_COMMUNITIES (16)", length, "a non-zero multiple of 8", offset
                )
            raw = bytes(value)
            ext_communities = tuple(raw[i : i + 8] for i in range(0, length, 8))
        elif code == 9:  # ORIGINATOR_ID, RFC 7606 §7.9
            if length != 4:
                raise _length_error("ORIGINATOR_ID (9)", length, "4", offset)
            originator_id = _ntop(_AF_INET, value)
        elif code == 10:  # CLUSTER_LIST, RFC 7606 §7.10
            if length == 0 or length % 4:
                raise _length_error("CLUSTER_LIST (10)", length, "a non-zero multiple of 4", offset)
            raw = bytes(value)
            cluster_list = tuple(_ntop(_AF_INET, raw[i : i + 4]) for i in range(0, length, 4))
        elif code == 6:  # ATOMIC_AGGREGATE, RFC 7606 §7.6
            if length != 0:
                why = f"length {length}, expected 0"
                discarded.append(_discard("ATOMIC_AGGREGATE (6)", why, "RFC 7606 §7.6"))
            else:
                atomic_aggregate = True
        elif code == 7:  # AGGREGATOR, RFC 7606 §7.7
            expected = 8 if four_octet_as else 6
            if length != expected:
                why = f"length {length}, expected {expected}"
                discarded.append(_discard("AGGREGATOR (7)", why, "RFC 7606 §7.7"))
            else:
                layout = _AGGREGATOR_4 if four_octet_as else _AGGREGATOR_2
                asn, address = layout.unpack_from(value)
                aggregator = (asn, _ntop(_AF_INET, address))
        elif code == 17 or code == 18:  # AS4_PATH, AS4_AGGREGATOR: RFC 6793 §6
            if four_octet_as:
                why = "not expected between 4-octet AS speakers"
                discarded.append(_discard(_attr_name(code), why, _RFC6793_6))
            elif code == 17:
                as4_path = value
            elif length != 8:
                why = f"length {length}, expected 8"
                discarded.append(_discard("AS4_AGGREGATOR (18)", why, _RFC6793_6))
            else:
                asn, address = _AGGREGATOR_4.unpack_from(value)
                as4_aggregator = (asn, _ntop(_AF_INET, address))
        elif code == 35:  # ONLY_TO_CUSTOMER, RFC 9234 §5
            if length != 4:
                raise _length_error("ONLY_TO_CUSTOMER (35)", length, "4", offset)
            only_to_customer = _U32.unpack_from(value)[0]
        elif code == 26:  # AIGP, RFC 7311 §3
            aigp, why = _parse_aigp(value)
            if why is not None:
                discarded.append(_discard("AIGP (26)", why, "RFC 7311 §3"))
        else:
            unknown.append((code, flags, value.hex()))

    if as4_path is not None or as4_aggregator is not None:
        as_path, aggregator = _apply_as4(as_path, aggregator, as4_path, as4_aggregator, discarded)

    return _new(
        Attributes,
        (
            origin, as_path, next_hop, med, local_pref, atomic_aggregate, aggregator,
            communities, originator_id, cluster_list, ext_communities, large_communities,
            only_to_customer, aigp, tuple(unknown), tuple(discarded), wire,
        ),
    )  # fmt: skip


def _apply_as4(as_path, aggregator, as4_value, as4_aggregator, discarded):
    """RFC 6793 §4.2.3 for an UPDATE from a 2-octet speaker: (as_path, aggregator)."""
    use_path = True
    if as4_aggregator is not None:
        if aggregator is None:
            discarded.append("AS4_AGGREGATOR (18): ignored without an AGGREGATOR (RFC 6793 §4.2.3)")
        elif aggregator[0] != AS_TRANS:
            # The aggregator is a 2-octet speaker: everything AS4 came from before it.
            discarded.append(
                f"AS4_AGGREGATOR (18) and AS4_PATH (17): ignored, AGGREGATOR AS {aggregator[0]} "
                "is not AS_TRANS (RFC 6793 §4.2.3)"
            )
            use_path = False
        else:
            aggregator = as4_aggregator
    if as4_value is not None and use_path:
        as4_path, note = _parse_as4_path(as4_value)
        if note is not None:
            discarded.append(note)
        if as4_path is not None:
            merged = _merge_as4_path(as_path, as4_path)
            if merged is None:
                discarded.append(
                    f"AS4_PATH (17): ignored, {_path_length(as4_path)} ASNs is more than "
                    f"AS_PATH's {_path_length(as_path)} (RFC 6793 §4.2.3)"
                )
            else:
                as_path = merged
    return as_path, aggregator


# ---------------------------------------------------------------------------
# Rendering


def as_path_text(as_path: tuple) -> str:
    """``"65001 65100 {65201,65202}"``: sets in braces, confederation sequences
    in parentheses, confederation sets in brackets; ``""`` for an empty path."""
    parts = []
    for seg_type, asns in as_path:
        if seg_type == 2:
            parts.append(" ".join(map(str, asns)))
        elif seg_type == 1:
            parts.append("{" + ",".join(map(str, asns)) + "}")
        elif seg_type == 3:
            parts.append("(" + " ".join(map(str, asns)) + ")")
        else:
            parts.append("[" + ",".join(map(str, asns)) + "]")
    return " ".join(parts)


def as_path_list(as_path: tuple) -> list:
    """ASNs in path order for JSON: an AS_SET as a nested list, confederation
    segments as ``{"confed_sequence": [...]}`` / ``{"confed_set": [...]}``."""
    result: list = []
    for seg_type, asns in as_path:
        if seg_type == 2:
            result.extend(asns)
        elif seg_type == 1:
            result.append(list(asns))
        elif seg_type == 3:
            result.append({"confed_sequence": list(asns)})
        else:
            result.append({"confed_set": list(asns)})
    return result


def origin_as(as_path: tuple) -> int | None:
    """The originating AS: the last ASN when the path ends in an AS_SEQUENCE.

    None for an empty path (locally originated), and when the path ends in an
    AS_SET or a confederation segment, where no single origin exists
    (RFC 6811 §2 treats an AS_SET origin as NONE).
    """
    if not as_path:
        return None
    seg_type, asns = as_path[-1]
    return asns[-1] if seg_type == 2 else None


def format_community(pair: tuple) -> str:
    """``"65001:100"`` (RFC 1997); well-known values stay numeric."""
    return f"{pair[0]}:{pair[1]}"


def format_large_community(triple: tuple) -> str:
    """``"global:local1:local2"`` (RFC 8092 §5)."""
    return f"{triple[0]}:{triple[1]}:{triple[2]}"


# RFC 9012 §14.4 / IANA "BGP Tunnel Encapsulation Attribute Tunnel Types".
_TUNNEL_TYPES = {
    1: "l2tpv3",
    2: "gre",
    7: "ipip",
    8: "vxlan",
    9: "nvgre",
    10: "mpls",
    11: "mpls_gre",
    12: "vxlan_gpe",
    13: "mpls_udp",
    14: "ipv6_tunnel",
    15: "sr_policy",
    16: "bare",
    17: "sr_tunnel",
    18: "cloud_security",
    19: "geneve",
    20: "any_encap",
}

# RFC 8097 §2: BGP Prefix Origin Validation State.
_VALIDATION_STATES = ("valid", "not_found", "invalid")

# RFC 4360 §3-5, RFC 5668 §2 sub-types shared by the AS and IPv4 specific types.
_SPECIFIC_SUBTYPES = {2: "rt", 3: "soo"}


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def format_ext_community(raw: bytes) -> str:
    """Readable text for one 8-octet extended community (RFC 4360 §2).

    Route target/origin for 2-octet AS (``"rt:65001:1"``), IPv4 address
    (``"rt:192.0.2.1:2"``) and 4-octet AS (``"soo:4200000001:7"``) types;
    RFC 9012 encapsulation (``"encap:vxlan"``) and color; RFC 8097 origin
    validation (``"origin_validation:valid"``); EVPN MAC mobility, ESI label,
    ES-import and router MAC (RFC 7432 §7.5-7.7, RFC 9135 §8.1); link bandwidth
    in bytes per second (draft-ietf-idr-link-bandwidth).  Anything else is
    ``"0xTT:0xSS:<hex of the 6 value octets>"``.
    """
    if len(raw) != 8:
        return "invalid:" + bytes(raw).hex()
    ctype = raw[0]
    sub = raw[1]
    base = ctype & 0xBF  # the transitive bit does not change the layout
    if base == 0x00:  # two-octet AS specific
        name = _SPECIFIC_SUBTYPES.get(sub)
        if name is not None:
            return f"{name}:{_U16.unpack_from(raw, 2)[0]}:{_U32.unpack_from(raw, 4)[0]}"
        if sub == 0x04:
            asn = _U16.unpack_from(raw, 2)[0]
            bandwidth = struct.unpack_from(">f", raw, 4)[0]
            shown = int(bandwidth) if bandwidth.is_integer() else bandwidth
            return f"link_bw:{asn}:{shown}"
    elif base == 0x01:  # IPv4 address specific
        name = _SPECIFIC_SUBTYPES.get(sub)
        if name is not None:
            return f"{name}:{_ntop(_AF_INET, bytes(raw[2:6]))}:{_U16.unpack_from(raw, 6)[0]}"
    elif base == 0x02:  # four-octet AS specific (RFC 5668)
        name = _SPECIFIC_SUBTYPES.get(sub)
        if name is not None:
            return f"{name}:{_U32.unpack_from(raw, 2)[0]}:{_U16.unpack_from(raw, 6)[0]}"
    elif base == 0x03:  # opaque
        if sub == 0x0C:
            tunnel = _U16.unpack_from(raw, 6)[0]
            return "encap:" + _TUNNEL_TYPES.get(tunnel, str(tunnel))
        if sub == 0x0B:
            return f"color:{_U32.unpack_from(raw, 4)[0]}"
        if sub == 0x0D:
            return "default_gateway"
        if sub == 0x00 and ctype == 0x43 and raw[7] < 3:
            return "origin_validation:" + _VALIDATION_STATES[raw[7]]
    elif ctype == 0x06:  # EVPN (RFC 7153 §5.2.2)
        if sub == 0x00:
            text = f"mac_mobility:{_U32.unpack_from(raw, 4)[0]}"
            return text + ":sticky" if raw[2] & 0x01 else text
        if sub == 0x01:
            label = int.from_bytes(raw[5:8], "big")
            text = f"esi_label:{label}"
            return text + ":single_active" if raw[2] & 0x01 else text
        if sub == 0x02:
            return "es_import:" + _mac(raw[2:8])
        if sub == 0x03:
            return "router_mac:" + _mac(raw[2:8])
    return f"0x{ctype:02x}:0x{sub:02x}:{bytes(raw[2:8]).hex()}"
