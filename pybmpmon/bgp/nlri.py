"""NLRI and the MP_REACH_NLRI / MP_UNREACH_NLRI attributes.

- RFC 4271 §4.3: IPv4 prefixes (length in bits, then the fewest octets holding it).
- RFC 4760 §3, §4: MP_REACH_NLRI (AFI, SAFI, next hop, reserved octet, NLRI) and
  MP_UNREACH_NLRI (AFI, SAFI, withdrawn routes); RFC 2545 §3: an IPv6 next hop of
  32 octets is the global address followed by the link-local one.
- RFC 8950 §3-4: IPv6 next hops for IPv4 (and VPN-IPv4) NLRI.
- RFC 7911 §3: with Add-Path every NLRI starts with a 4-octet path identifier.
- RFC 8277 §2 (obsoletes RFC 3107): labeled unicast, a stack of 3-octet label
  entries ended by the bottom-of-stack bit; the prefix length counts the label
  bits; §2.4: a withdrawal carries one 3-octet Compatibility field (0x800000, or
  0x000000 from older speakers) instead of a label stack.
- RFC 4364 §4.2-4.3.4 and RFC 4659 §3: VPN-IPv4/IPv6 NLRI (labels, 8-octet route
  distinguisher of type 0, 1 or 2, prefix) and their next hops, which carry a
  (zero) route distinguisher in front of the address.
- RFC 7432 §7.1-7.4: EVPN route types 1-4; RFC 9136 §3: route type 5 (IP prefix)
  in its IPv4 and IPv6 sizes.  Unknown route types are kept raw.

Strategy: every prefix is returned as canonical CIDR text, built straight from
the wire octets with tables indexed by prefix length: octet strings for IPv4 (see
``decode_ipv4``), zero padding for ``socket.inet_ntop`` for IPv6.  Host bits set
beyond the prefix length (a router may send them) are cleared so the text is
canonical; that costs one AND per prefix.  No ``ipaddress`` objects are made.
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6, inet_ntop
from struct import Struct

from pybmpmon.bgp.model import EvpnRoute, Nlri, RouteSet, family_name
from pybmpmon.errors import ContentError

__all__ = [
    "DECODABLE",
    "decode_ipv4",
    "decode_mp_reach",
    "decode_mp_unreach",
    "decode_nlri",
    "format_rd",
]

_new = tuple.__new__

_LABELED = 4
_VPN = 128

DECODABLE = frozenset(
    {(1, 1), (2, 1), (1, 2), (2, 2), (1, 4), (2, 4), (1, 128), (2, 128), (25, 70)}
)

# RFC 8277 §2.4: Compatibility field values that stand for "no label".  Seen as the
# first entry they end the stack, in any UPDATE: neither has the bottom-of-stack bit,
# so read as labels they would swallow the prefix.  (A withdrawal with some other
# ignored value cannot be told from a label stack and is read as one.)
_WITHDRAWAL_LABELS = (0x800000, 0x000000)


def _prefix_table(bits: int) -> tuple:
    """Per prefix length: (octets on the wire, zero padding, "/len", last octet's host bits)."""
    table = []
    for plen in range(bits + 1):
        nbytes = (plen + 7) >> 3
        host = (0xFF >> (plen & 7)) if plen & 7 else 0
        table.append((nbytes, bytes(bits // 8 - nbytes), f"/{plen}", host))
    return tuple(table)


_V4 = _prefix_table(32)
_V6 = _prefix_table(128)
# afi -> (address family for inet_ntop, prefix table, name for messages)
_AFI_PREFIX = {1: (AF_INET, _V4, "IPv4"), 2: (AF_INET6, _V6, "IPv6")}

_RD0 = Struct("!HHI")  # type 0: 2-octet ASN, 4-octet number
_RD1 = Struct("!H4sH")  # type 1: IPv4 address, 2-octet number
_RD2 = Struct("!HIH")  # type 2: 4-octet ASN, 2-octet number
_U32 = Struct("!I")


def _clear_host_bits(addr: bytes, host: int) -> bytes:
    """*addr* with the bits under *host* in its last octet cleared."""
    return addr[:-1] + bytes((addr[-1] & (0xFF ^ host),))


def format_rd(data: bytes, offset: int) -> str:
    """The 8-octet route distinguisher at *offset* as text (RFC 4364 §4.2).

    Type 0 ``"65000:100"``, type 1 ``"192.0.2.1:100"``, type 2 ``"4200000000:100"``,
    any other type ``"type<N>:<hex of the 6-octet value>"``.
    """
    if offset < 0 or offset + 8 > len(data):
        raise ContentError("truncated route distinguisher", offset)
    rd_type = data[offset] << 8 | data[offset + 1]
    if rd_type == 0:
        _, asn, number = _RD0.unpack_from(data, offset)
        return f"{asn}:{number}"
    if rd_type == 1:
        _, addr, number = _RD1.unpack_from(data, offset)
        return f"{inet_ntop(AF_INET, addr)}:{number}"
    if rd_type == 2:
        _, asn, number = _RD2.unpack_from(data, offset)
        return f"{asn}:{number}"
    return f"type{rd_type}:{data[offset + 2 : offset + 8].hex()}"


# --- unicast and multicast: the hot path -------------------------------------------

# Strategy: IPv4 text is built from two tables instead of inet_ntop: "n." for each
# octet value and, per prefix length, the tail ("0/24", "0.0/16", ...).  Three
# indexings and concatenations cost a third of an inet_ntop call plus the slice
# and padding it needs, and a full table is mostly IPv4.  The last octet is always
# ANDed with the length's mask, which clears host bits without a branch.
_OCTET_DOT = tuple(f"{i}." for i in range(256))
_OCTET = tuple(str(i) for i in range(256))


def _v4_text_table() -> tuple:
    """Per IPv4 prefix length: (octets on the wire, mask of the last octet, text tail)."""
    table = []
    for plen in range(33):
        nbytes = (plen + 7) >> 3
        mask = (0xFF << (8 - (plen & 7))) & 0xFF if plen & 7 else 0xFF
        zeros = ".".join(["0"] * (4 - nbytes))
        table.append((nbytes, mask, f"{zeros}/{plen}" if plen else "0.0.0.0/0"))
    return tuple(table)


_V4_TEXT = _v4_text_table()


def decode_ipv4(data: bytes, pos: int, end: int, add_path: bool) -> tuple:
    """IPv4 prefixes (RFC 4271 §4.3), with *add_path* each after a path id (RFC 7911 §3).

    The UPDATE decoder's fast path for classic NLRI: *data* must be ``bytes``
    and ``pos <= end <= len(data)`` (:func:`decode_nlri` checks both).
    """
    table = _V4_TEXT
    dot = _OCTET_DOT
    new = _new
    out = []
    append = out.append
    path_id = None
    while pos < end:
        if add_path:
            if pos + 5 > end:
                raise ContentError("IPv4 path identifier truncated", pos)
            path_id = _U32.unpack_from(data, pos)[0]
            pos += 4
        plen = data[pos]
        if plen > 32:
            raise ContentError(f"IPv4 prefix length {plen} exceeds 32", pos)
        nbytes, mask, tail = table[plen]
        at = pos
        pos += 1 + nbytes  # pos is now just past the prefix
        if pos > end:
            raise ContentError(f"IPv4 prefix /{plen} truncated", at)
        if nbytes == 3:
            text = dot[data[pos - 3]] + dot[data[pos - 2]] + dot[data[pos - 1] & mask] + tail
        elif nbytes == 2:
            text = dot[data[pos - 2]] + dot[data[pos - 1] & mask] + tail
        elif nbytes == 4:
            text = (
                dot[data[pos - 4]]
                + dot[data[pos - 3]]
                + dot[data[pos - 2]]
                + _OCTET[data[pos - 1] & mask]
                + tail
            )
        elif nbytes == 1:
            text = dot[data[pos - 1] & mask] + tail
        else:
            text = tail
        append(new(Nlri, (text, path_id, None, (), None)))
    return tuple(out)


def _decode_ipv6(data: bytes, pos: int, end: int, add_path: bool) -> tuple:
    """IPv6 prefixes (RFC 4760 §5, RFC 2545), with *add_path* each after a path id."""
    table = _V6
    ntop = inet_ntop
    new = _new
    out = []
    append = out.append
    path_id = None
    while pos < end:
        if add_path:
            if pos + 5 > end:
                raise ContentError("IPv6 path identifier truncated", pos)
            path_id = _U32.unpack_from(data, pos)[0]
            pos += 4
        plen = data[pos]
        if plen > 128:
            raise ContentError(f"IPv6 prefix length {plen} exceeds 128", pos)
        nbytes, pad, suffix, host = table[plen]
        nxt = pos + 1 + nbytes
        if nxt > end:
            raise ContentError(f"IPv6 prefix /{plen} truncated", pos)
        addr = data[pos + 1 : nxt]
        if host and addr[-1] & host:
            addr = _clear_host_bits(addr, host)
        append(new(Nlri, (ntop(AF_INET6, addr + pad) + suffix, path_id, None, (), None)))
        pos = nxt
    return tuple(out)


# --- labeled unicast and VPN -------------------------------------------------------


def _decode_labeled(data: bytes, pos: int, end: int, afi: int, add_path: bool, vpn: bool) -> tuple:
    """Labeled unicast (RFC 8277 §2) or, with *vpn*, VPN routes (RFC 4364 §4.3.4, RFC 4659 §3)."""
    af, table, name = _AFI_PREFIX[afi]
    max_bits = len(table) - 1
    kind = f"{name} VPN" if vpn else f"{name} labeled"
    out = []
    path_id = None
    while pos < end:
        if add_path:
            if pos + 5 > end:
                raise ContentError(f"{kind} path identifier truncated", pos)
            (path_id,) = _U32.unpack_from(data, pos)
            pos += 4
        nlri_at = pos
        bits = data[pos]
        pos += 1
        labels = []
        while True:
            if bits < 24:
                raise ContentError(
                    f"{kind} prefix length {data[nlri_at]} too short for its labels", nlri_at
                )
            if pos + 3 > end:
                raise ContentError(f"{kind} label stack truncated", pos)
            entry = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
            pos += 3
            bits -= 24
            if not labels and entry in _WITHDRAWAL_LABELS:
                break  # RFC 8277 §2.4 Compatibility field: one entry, no label
            labels.append(entry >> 4)
            if entry & 1:
                break  # bottom of stack
        rd = None
        if vpn:
            if bits < 64:
                raise ContentError(
                    f"{kind} prefix length {data[nlri_at]} leaves no room for the RD", nlri_at
                )
            if pos + 8 > end:
                raise ContentError(f"{kind} route distinguisher truncated", pos)
            rd = format_rd(data, pos)
            pos += 8
            bits -= 64
        if bits > max_bits:
            raise ContentError(f"{kind} prefix length {bits} exceeds {max_bits}", nlri_at)
        nbytes, pad, suffix, host = table[bits]
        nxt = pos + nbytes
        if nxt > end:
            raise ContentError(f"{kind} prefix /{bits} truncated", nlri_at)
        addr = data[pos:nxt]
        if host and addr[-1] & host:
            addr = _clear_host_bits(addr, host)
        prefix = inet_ntop(af, addr + pad) + suffix
        out.append(_new(Nlri, (prefix, path_id, rd, tuple(labels), None)))
        pos = nxt
    return tuple(out)


# --- EVPN (RFC 7432 §7, RFC 9136 §3) -----------------------------------------------


def _label24(data: bytes, pos: int) -> int:
    # EVPN keeps the whole 24-bit field: with VXLAN it is a VNI, not a label (RFC 8365 §5.1.3).
    return data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]


def _evpn_ip(data: bytes, pos: int, nbytes: int) -> str:
    return inet_ntop(AF_INET if nbytes == 4 else AF_INET6, data[pos : pos + nbytes])


def _esi(data: bytes, pos: int) -> str:
    # RFC 7432 §5: 10 octets, the first one the ESI type; shown as plain colon hex.
    return data[pos : pos + 10].hex(":")


# Each decoder gets the route's offset *at* (its type octet), the offset *v* of its
# value and the value's *length*, checks the length before reading anything, and
# returns (prefix, rd, labels, EvpnRoute).


def _evpn_ad(data: bytes, at: int, v: int, length: int):
    """Type 1, Ethernet Auto-Discovery (RFC 7432 §7.1): RD, ESI, tag, label."""
    if length != 25:
        raise ContentError(f"EVPN type 1 length {length}, expected 25", at)
    tag = _U32.unpack_from(data, v + 18)[0]
    route = _new(EvpnRoute, (1, _esi(data, v + 8), tag, None, None, None, None))
    return None, format_rd(data, v), (_label24(data, v + 22),), route


def _evpn_mac_ip(data: bytes, at: int, v: int, length: int):
    """Type 2, MAC/IP Advertisement (RFC 7432 §7.2): RD, ESI, tag, MAC, IP, 1-2 labels."""
    if length < 33:
        raise ContentError(f"EVPN type 2 length {length} too short", at)
    mac_bits = data[v + 22]
    if mac_bits != 48:
        raise ContentError(f"EVPN type 2 MAC address length {mac_bits}, expected 48", v + 22)
    ip_bits = data[v + 29]
    if ip_bits not in (0, 32, 128):
        raise ContentError(f"EVPN type 2 IP length {ip_bits}, expected 0, 32 or 128", v + 29)
    ip_len = ip_bits >> 3
    labels_at = v + 30 + ip_len
    label_bytes = v + length - labels_at  # MPLS Label1, and Label2 when present
    if label_bytes != 3 and label_bytes != 6:
        raise ContentError(f"EVPN type 2 length {length} does not fit an IP of {ip_bits} bits", at)
    labels = (_label24(data, labels_at),)
    if label_bytes == 6:
        labels += (_label24(data, labels_at + 3),)
    tag = _U32.unpack_from(data, v + 18)[0]
    mac = data[v + 23 : v + 29].hex(":")
    ip = _evpn_ip(data, v + 30, ip_len) if ip_len else None
    route = _new(EvpnRoute, (2, _esi(data, v + 8), tag, mac, ip, None, None))
    return None, format_rd(data, v), labels, route


def _evpn_imet(data: bytes, at: int, v: int, length: int):
    """Type 3, Inclusive Multicast Ethernet Tag (RFC 7432 §7.3): RD, tag, originator IP."""
    if length < 13:
        raise ContentError(f"EVPN type 3 length {length} too short", at)
    ip_bits = data[v + 12]
    if ip_bits not in (32, 128) or length != 13 + (ip_bits >> 3):
        raise ContentError(f"EVPN type 3 IP length {ip_bits} does not fit length {length}", v + 12)
    tag = _U32.unpack_from(data, v + 8)[0]
    route = _new(EvpnRoute, (3, None, tag, None, _evpn_ip(data, v + 13, ip_bits >> 3), None, None))
    return None, format_rd(data, v), (), route


def _evpn_es(data: bytes, at: int, v: int, length: int):
    """Type 4, Ethernet Segment (RFC 7432 §7.4): RD, ESI, originator IP."""
    if length < 19:
        raise ContentError(f"EVPN type 4 length {length} too short", at)
    ip_bits = data[v + 18]
    if ip_bits not in (32, 128) or length != 19 + (ip_bits >> 3):
        raise ContentError(f"EVPN type 4 IP length {ip_bits} does not fit length {length}", v + 18)
    ip = _evpn_ip(data, v + 19, ip_bits >> 3)
    route = _new(EvpnRoute, (4, _esi(data, v + 8), None, None, ip, None, None))
    return None, format_rd(data, v), (), route


def _evpn_prefix(data: bytes, at: int, v: int, length: int):
    """Type 5, IP Prefix (RFC 9136 §3.1): RD, ESI, tag, prefix, gateway IP, label.

    The prefix and the gateway are both IPv4 or both IPv6, so the route is 34 or
    58 octets long and the length tells the two apart (§3.1).
    """
    if length == 34:
        af, table, nbytes = AF_INET, _V4, 4
    elif length == 58:
        af, table, nbytes = AF_INET6, _V6, 16
    else:
        raise ContentError(f"EVPN type 5 length {length}, expected 34 or 58", at)
    plen = data[v + 22]
    if plen >= len(table):
        raise ContentError(f"EVPN type 5 prefix length {plen} exceeds {len(table) - 1}", v + 22)
    # The prefix field is a whole address; keep the prefix's octets, clear its host bits.
    keep, pad, suffix, host = table[plen]
    addr = data[v + 23 : v + 23 + keep]
    if host and addr[-1] & host:
        addr = _clear_host_bits(addr, host)
    prefix = inet_ntop(af, addr + pad) + suffix
    gw_at = v + 23 + nbytes
    gateway = inet_ntop(af, data[gw_at : gw_at + nbytes])
    tag = _U32.unpack_from(data, v + 18)[0]
    route = _new(EvpnRoute, (5, _esi(data, v + 8), tag, None, None, gateway, None))
    return prefix, format_rd(data, v), (_label24(data, gw_at + nbytes),), route


_EVPN_TYPES = {1: _evpn_ad, 2: _evpn_mac_ip, 3: _evpn_imet, 4: _evpn_es, 5: _evpn_prefix}


def _decode_evpn(data: bytes, pos: int, end: int, add_path: bool) -> tuple:
    """EVPN NLRI: route type (1 octet), length (1 octet), route (RFC 7432 §7)."""
    out = []
    path_id = None
    while pos < end:
        if add_path:
            if pos + 4 > end:
                raise ContentError("EVPN path identifier truncated", pos)
            (path_id,) = _U32.unpack_from(data, pos)
            pos += 4
        if pos + 2 > end:
            raise ContentError("EVPN route header truncated", pos)
        route_type = data[pos]
        length = data[pos + 1]
        nxt = pos + 2 + length
        if nxt > end:
            raise ContentError(f"EVPN type {route_type} route of {length} octets truncated", pos)
        decoder = _EVPN_TYPES.get(route_type)
        if decoder is None:
            route = _new(EvpnRoute, (route_type, None, None, None, None, None, data[pos:nxt]))
            out.append(_new(Nlri, (None, path_id, None, (), route)))
        else:
            prefix, rd, labels, route = decoder(data, pos, pos + 2, length)
            out.append(_new(Nlri, (prefix, path_id, rd, labels, route)))
        pos = nxt
    return tuple(out)


# --- public entry points -----------------------------------------------------------


def _as_bytes(data, start: int, end: int, what: str) -> bytes:
    """*data* as bytes (slices of it feed inet_ntop), after checking start..end lies inside."""
    if type(data) is not bytes:
        data = bytes(data)
    if start < 0 or end > len(data) or start > end:
        raise ContentError(f"{what} bounds {start}..{end} outside {len(data)} octets", start)
    return data


def decode_nlri(data: bytes, start: int, end: int, afi: int, safi: int, add_path: bool) -> tuple:
    """The NLRI in ``data[start:end]`` of one family, as a tuple of :class:`Nlri`.

    *afi*/*safi* must be in :data:`DECODABLE`; *add_path* says whether each NLRI
    starts with a path identifier.  Raises :class:`ContentError` with the offset
    in *data* of the NLRI that is malformed.
    """
    data = _as_bytes(data, start, end, "NLRI")
    if afi == 1 or afi == 2:
        if safi == 1 or safi == 2:
            if afi == 1:
                return decode_ipv4(data, start, end, add_path)
            return _decode_ipv6(data, start, end, add_path)
        if safi == _LABELED or safi == _VPN:
            return _decode_labeled(data, start, end, afi, add_path, safi == _VPN)
    elif afi == 25 and safi == 70:
        return _decode_evpn(data, start, end, add_path)
    raise ContentError(f"cannot decode NLRI of {family_name(afi, safi)}", start)


# Next hop length -> (RD octets before each address, address octets, link-local follows)
_NEXT_HOPS = {
    4: (0, 4, False),  # IPv4
    16: (0, 16, False),  # IPv6 (RFC 2545; for IPv4 NLRI RFC 8950)
    32: (0, 16, True),  # IPv6 global + link-local (RFC 2545 §3)
    12: (8, 4, False),  # VPN: RD + IPv4 (RFC 4364 §4.3.2)
    24: (8, 16, False),  # VPN: RD + IPv6 (RFC 4659 §3.2, RFC 8950)
    48: (8, 16, True),  # VPN: RD + IPv6 global, RD + IPv6 link-local (RFC 4659 §3.2.1)
}


def _next_hop(data: bytes, pos: int, length: int, decodable: bool) -> tuple:
    """(next hop, link-local next hop) of the MP_REACH next hop field at *pos*.

    Strategy: the length alone tells the form (RFC 4760 §3 leaves the AFI/SAFI
    to define it, and every family here uses one of these sizes), so an IPv4
    route with an IPv6 next hop (RFC 8950) needs no special case.
    """
    shape = _NEXT_HOPS.get(length)
    if shape is None:
        if decodable:
            raise ContentError(f"next hop length {length} is not valid", pos - 1)
        return None, None  # an unknown family may use any next hop form
    rd_len, addr_len, link_local = shape
    af = AF_INET if addr_len == 4 else AF_INET6
    first = pos + rd_len
    next_hop = inet_ntop(af, data[first : first + addr_len])
    if not link_local:
        return next_hop, None
    second = first + addr_len + rd_len
    return next_hop, inet_ntop(af, data[second : second + addr_len])


def decode_mp_reach(data: bytes, start: int, end: int, add_path: frozenset) -> RouteSet:
    """The MP_REACH_NLRI attribute value in ``data[start:end]`` (RFC 4760 §3).

    *add_path* is the set of (afi, safi) whose NLRI carry path identifiers.  A
    family outside :data:`DECODABLE` gives ``nlri=()`` and the NLRI bytes in ``raw``.
    """
    data = _as_bytes(data, start, end, "MP_REACH_NLRI")
    if end - start < 5:
        raise ContentError("MP_REACH_NLRI shorter than 5 octets", start)
    afi = data[start] << 8 | data[start + 1]
    safi = data[start + 2]
    nh_len = data[start + 3]
    nlri_at = start + 4 + nh_len + 1  # a reserved octet (once the SNPA count) follows
    if nlri_at > end:
        raise ContentError(f"MP_REACH_NLRI next hop of {nh_len} octets truncated", start + 3)
    family = family_name(afi, safi)
    decodable = (afi, safi) in DECODABLE
    next_hop, link_local = _next_hop(data, start + 4, nh_len, decodable)
    if not decodable:
        raw = data[nlri_at:end]
        return _new(RouteSet, (afi, safi, family, next_hop, (), link_local, raw))
    nlri = decode_nlri(data, nlri_at, end, afi, safi, (afi, safi) in add_path)
    return _new(RouteSet, (afi, safi, family, next_hop, nlri, link_local, None))


def decode_mp_unreach(data: bytes, start: int, end: int, add_path: frozenset) -> RouteSet:
    """The MP_UNREACH_NLRI attribute value in ``data[start:end]`` (RFC 4760 §4).

    An empty NLRI field (the End-of-RIB form, RFC 4724 §2) gives ``nlri=()``.
    """
    data = _as_bytes(data, start, end, "MP_UNREACH_NLRI")
    if end - start < 3:
        raise ContentError("MP_UNREACH_NLRI shorter than 3 octets", start)
    afi = data[start] << 8 | data[start + 1]
    safi = data[start + 2]
    family = family_name(afi, safi)
    if (afi, safi) not in DECODABLE:
        return _new(RouteSet, (afi, safi, family, None, (), None, data[start + 3 : end]))
    nlri = decode_nlri(data, start + 3, end, afi, safi, (afi, safi) in add_path)
    return _new(RouteSet, (afi, safi, family, None, nlri, None, None))
