"""BMP message bodies: the seven message types of RFC 7854 §4.

- Common header (§4.1) and per-peer header (§4.2), with the O flag of RFC 8671
  §4 and the Loc-RIB peer type and F flag of RFC 9069 §4.1-4.2.
- Route Monitoring (§4.6): the BGP UPDATE is handed to
  :func:`pybmpmon.bgp.message.decode_bgp_message` with the peer's context.
- Statistics Report (§4.8, RFC 8671 §6, RFC 9069 §6).
- Peer Down (§4.9, reason 5 of RFC 9069 §5 and any later reason kept raw).
- Peer Up (§4.10) with both OPEN messages and the Information TLVs (§4.4).
- Initiation (§4.3), Termination (§4.5), Route Mirroring (§4.7).

Every malformed body raises :class:`~pybmpmon.errors.ContentError` (or its
subclass :class:`~pybmpmon.errors.BgpError`) with the offset inside the BMP
message; nothing else escapes.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Callable, Optional

from pybmpmon.bgp import message as _message
from pybmpmon.bgp.message import MARKER, decode_bgp_message, decode_update
from pybmpmon.bgp.model import BgpContext, Notification, Update
from pybmpmon.bgp.nlri import format_rd
from pybmpmon.bgp.open import decode_open
from pybmpmon.bmp.model import (
    BmpMessage,
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
from pybmpmon.errors import ContentError, DecodeError
from pybmpmon.iana import STAT_PER_AFI_SAFI
from pybmpmon.reader import Reader

BMP_VERSION = 3
COMMON_HEADER_SIZE = 6
PEER_HEADER_SIZE = 42
# The per-peer header without its 8-byte timestamp: the key of the peer cache.
PEER_KEY_SIZE = 34
_PEER_END = COMMON_HEADER_SIZE + PEER_HEADER_SIZE  # where a message body starts
_PEER_KEY_END = COMMON_HEADER_SIZE + PEER_KEY_SIZE  # where the per-peer timestamp starts
_BGP_LENGTH = _PEER_END + 16  # a Route Monitoring message's BGP length field
_BGP_TYPE = _PEER_END + 18
BGP_HEADER_SIZE = 19
_BGP_MARKER = b"\xff" * 16
# A router has a few hundred peers at most; a bigger cache means garbage
# headers, so it is emptied rather than allowed to grow.
PEER_CACHE_LIMIT = 4096

_COMMON = struct.Struct(">BIB").unpack_from
_PEER_FIXED = struct.Struct(">BB8s16sI4s").unpack_from
_TIMESTAMP = struct.Struct(">II").unpack_from
_U16 = struct.Struct(">H").unpack_from

_STRING_INFO_TYPES = frozenset({0, 1, 2, 3})  # RFC 7854 §4.4, RFC 9069 §5
_NOTIFICATION_REASONS = frozenset({1, 3})
_new = tuple.__new__


def _load_fastpath():
    """The C accelerator's route_monitoring (see decode_bmp), or None.

    It is part of ``pybmpmon._fastpath``, so it is used exactly when the
    UPDATE decoder uses that module (``bgp.message.FASTPATH``).
    """
    if not _message.FASTPATH:
        return None
    from pybmpmon import _fastpath

    try:
        _fastpath.configure_bmp(PeerHeader, RouteMonitoring)
    except (AttributeError, TypeError, ValueError):
        return None  # a stale build against another model: stay correct, not fast
    return _fastpath.route_monitoring


_fast_route_monitoring = _load_fastpath()


def decode_peer_header(data, offset: int) -> PeerHeader:
    """Decode the 42-byte per-peer header at ``data[offset:]`` (RFC 7854 §4.2)."""
    if len(data) - offset < PEER_HEADER_SIZE:
        raise ContentError("truncated per-peer header", offset)
    seconds, micros = _TIMESTAMP(data, offset + PEER_KEY_SIZE)
    return _new(PeerHeader, _peer_fields(data, offset) + (seconds + micros / 1e6,))


def _peer_fields(data, offset: int) -> tuple:
    """The per-peer header fields before the timestamp."""
    peer_type, flags, distinguisher, address, asn, bgp_id = _PEER_FIXED(data, offset)
    # RFC 9069 §4.1: a Loc-RIB peer has a zero address and reuses bit 0x80 as
    # the F flag, so the V flag cannot be trusted for it.
    if peer_type == 3:
        ipv6 = any(address[:12])
    else:
        ipv6 = bool(flags & 0x80)
    return (
        peer_type,
        flags,
        _distinguisher(distinguisher),
        IPv6Address(address) if ipv6 else IPv4Address(address[12:]),
        asn,
        IPv4Address(bgp_id),
    )


def _distinguisher(raw: bytes) -> str:
    """The peer distinguisher as text: "0" when unset, else like an RD (RFC 4364 §4.2)."""
    if not any(raw):
        return "0"
    return format_rd(raw, 0)


def decode_bmp(
    msg: bytes,
    context_for: Callable[[PeerHeader], BgpContext],
    peer_cache: Optional[dict] = None,
) -> BmpMessage:
    """Decode one whole BMP message (common header included).

    *msg* must be ``bytes`` (the framer's output).  *context_for* gives the
    :class:`BgpContext` of a Route Monitoring message's peer.  *peer_cache*,
    when given, maps the first 34 bytes of a per-peer header to its decoded
    fields and that context, so each peer is parsed and looked up once; the
    caller clears it whenever a peer's context changes (Peer Up, Peer Down).

    Strategy: with the C accelerator, a well-formed Route Monitoring message
    of a cached peer is decoded there whole; anything else (a peer seen for
    the first time, another type, a doubt) comes back None and takes the
    code below, the reference.
    """
    if peer_cache is not None and _fast_route_monitoring is not None:
        message = _fast_route_monitoring(msg, peer_cache)
        if message is not None:
            return message
    size = len(msg)
    if size < COMMON_HEADER_SIZE:
        raise ContentError("BMP message shorter than its common header", 0)
    version, length, msg_type = _COMMON(msg, 0)
    if version != BMP_VERSION:
        raise ContentError(f"BMP version {version}", 0)
    if length != size:
        raise ContentError(f"BMP length field {length} but the message has {size} bytes", 1)

    if msg_type == 0:
        # The hot path: one per UPDATE, so no Reader, and one cache lookup
        # gives both the peer's decoded header fields and its BGP context.
        if size < _PEER_END:
            raise ContentError("truncated per-peer header", COMMON_HEADER_SIZE)
        key = msg[COMMON_HEADER_SIZE:_PEER_KEY_END]
        cached = None if peer_cache is None else peer_cache.get(key)
        seconds, micros = _TIMESTAMP(msg, _PEER_KEY_END)
        if cached is None:
            fields = _peer_fields(msg, COMMON_HEADER_SIZE)
            peer = _new(PeerHeader, fields + (seconds + micros / 1e6,))
            ctx = context_for(peer)
            if peer_cache is not None:
                if len(peer_cache) >= PEER_CACHE_LIMIT:
                    peer_cache.clear()
                peer_cache[key] = (fields, ctx)
        else:
            fields, ctx = cached
            peer = _new(PeerHeader, fields + (seconds + micros / 1e6,))
        if (
            size - _PEER_END >= 19
            and msg[_BGP_TYPE] == 2
            and ((msg[_BGP_LENGTH] << 8) | msg[_BGP_LENGTH + 1]) == size - _PEER_END
            and msg.startswith(MARKER, _PEER_END)
        ):
            # Strategy: the usual UPDATE skips decode_bgp_message's dispatch;
            # anything unusual takes the general path and its precise errors.
            update = decode_update(msg, _PEER_END + 19, size, ctx)
        else:
            update, end = decode_bgp_message(msg, _PEER_END, size, ctx)
            if type(update) is not Update:
                raise ContentError(
                    f"Route Monitoring carries a BGP {type(update).__name__}, not an UPDATE",
                    _PEER_END,
                )
            if end != size:
                raise ContentError("bytes after the BGP UPDATE of a Route Monitoring message", end)
        return _new(RouteMonitoring, (peer, update))

    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        raise ContentError(f"unknown BMP message type {msg_type}", 5)
    return decoder(Reader(msg, COMMON_HEADER_SIZE, size))


def _peer(r: Reader) -> PeerHeader:
    pos = r.skip(PEER_HEADER_SIZE, "per-peer header")
    return decode_peer_header(r.data, pos)


def _statistics_report(r: Reader) -> StatisticsReport:
    """RFC 7854 §4.8.

    Strategy: a counter is decoded by its actual length, not by what its type
    promises, because real routers disagree with the RFC (FRR sends 4-byte
    values under the private type 65531, GoBGP sends types 7 and 8 as 8-byte
    gauges).  4 bytes is a 32-bit counter, 8 bytes a 64-bit gauge, 11 bytes
    of a per-AFI/SAFI type is AFI, SAFI and a 64-bit gauge; any other shape is
    kept as raw bytes.
    """
    peer = _peer(r)
    count = r.u32("statistics count")
    stats = []
    for _ in range(count):
        stat_type = r.u16("statistic type")
        length = r.u16("statistic length")
        value = r.sub(length, f"statistic {stat_type}")
        if length == 4:
            stats.append(Stat(stat_type, value.u32()))
        elif length == 8:
            stats.append(Stat(stat_type, value.u64()))
        elif length == 11 and stat_type in STAT_PER_AFI_SAFI:
            afi = value.u16()
            safi = value.u8()
            stats.append(Stat(stat_type, value.u64(), afi, safi))
        else:
            stats.append(Stat(stat_type, value.rest()))
    if not r.at_end():
        raise ContentError(f"{r.remaining} bytes after {count} statistics", r.pos)
    return StatisticsReport(peer, tuple(stats))


def _peer_down(r: Reader) -> PeerDown:
    """RFC 7854 §4.9."""
    peer = _peer(r)
    reason = r.u8("peer down reason")
    notification = None
    fsm_event = None
    if reason in _NOTIFICATION_REASONS:
        notification = _notification_pdu(r)
    elif reason == 2:
        fsm_event = r.u16("FSM event code")
    # Reason 4 has no data; 5, 6 and unknown reasons keep theirs raw, and so
    # does anything a router appended after the defined fields.
    return PeerDown(peer, reason, notification, fsm_event, r.rest())


def _notification_pdu(r: Reader) -> Notification:
    """A whole BGP NOTIFICATION message (RFC 4271 §4.1, §4.5) inside a Peer Down."""
    start, end = _bgp_message(r, 3, "NOTIFICATION")
    if end - start < 2:
        raise ContentError("NOTIFICATION without error code and subcode", start)
    data = r.data
    return Notification(data[start], data[start + 1], bytes(data[start + 2 : end]))


def _bgp_message(r: Reader, expected_type: int, name: str) -> tuple[int, int]:
    """Check the BGP header at the reader; return the body's (start, end) and skip it."""
    pos = r.need(BGP_HEADER_SIZE, f"BGP {name} header")
    data = r.data
    if data[pos : pos + 16] != _BGP_MARKER:
        raise ContentError(f"BGP {name} marker is not all ones", pos)
    length = _U16(data, pos + 16)[0]
    msg_type = data[pos + 18]
    if msg_type != expected_type:
        raise ContentError(f"expected a BGP {name}, found BGP message type {msg_type}", pos + 18)
    if length < BGP_HEADER_SIZE:
        raise ContentError(f"BGP {name} length {length}", pos + 16)
    r.skip(length, f"BGP {name}")
    return pos + BGP_HEADER_SIZE, pos + length


def _peer_up(r: Reader) -> PeerUp:
    """RFC 7854 §4.10."""
    peer = _peer(r)
    address = r.take(16, "local address")
    # The local address has the family of the peer address (for a Loc-RIB
    # peer, whose V bit is the F flag, the bytes tell).
    if peer.address.version == 6 or (peer.peer_type == 3 and any(address[:12])):
        local_address = IPv6Address(address)
    else:
        local_address = IPv4Address(address[12:])
    local_port = r.u16("local port")
    remote_port = r.u16("remote port")
    opens = []
    for name in ("sent OPEN", "received OPEN"):
        start, end = _bgp_message(r, 1, name)
        opens.append(decode_open(r.data, start, end))
    return PeerUp(peer, local_address, local_port, remote_port, opens[0], opens[1], _info_tlvs(r))


def _info_tlvs(r: Reader) -> tuple:
    """Information TLVs (RFC 7854 §4.4) up to the end of the reader."""
    tlvs = []
    while not r.at_end():
        tlv_type = r.u16("information TLV type")
        length = r.u16("information TLV length")
        value = r.take(length, f"information TLV {tlv_type}")
        if tlv_type in _STRING_INFO_TYPES:
            tlvs.append(InfoTlv(tlv_type, value.decode("utf-8", errors="replace")))
        else:
            tlvs.append(InfoTlv(tlv_type, value))
    return tuple(tlvs)


def _initiation(r: Reader) -> Initiation:
    """RFC 7854 §4.3."""
    return Initiation(_info_tlvs(r))


def _termination(r: Reader) -> Termination:
    """RFC 7854 §4.5: type 0 is a string, type 1 the 2-byte reason code."""
    tlvs = []
    reason = None
    while not r.at_end():
        tlv_type = r.u16("termination TLV type")
        length = r.u16("termination TLV length")
        value = r.sub(length, f"termination TLV {tlv_type}")
        if tlv_type == 0:
            tlvs.append(InfoTlv(0, value.rest().decode("utf-8", errors="replace")))
        elif tlv_type == 1:
            if length != 2:
                raise ContentError(f"termination reason TLV of {length} bytes", value.pos)
            reason = value.u16()
            tlvs.append(InfoTlv(1, reason))
        else:
            tlvs.append(InfoTlv(tlv_type, value.rest()))
    return Termination(tuple(tlvs), reason)


def _route_mirroring(r: Reader) -> RouteMirroring:
    """RFC 7854 §4.7: BGP message and information TLVs."""
    peer = _peer(r)
    tlvs = []
    while not r.at_end():
        tlv_type = r.u16("route mirroring TLV type")
        length = r.u16("route mirroring TLV length")
        value = r.sub(length, f"route mirroring TLV {tlv_type}")
        raw = bytes(r.data[value.pos : value.end])
        if tlv_type == 0:
            # A mirrored message may be exactly the errored PDU the router
            # rejected, so failing to decode it is information, not an error.
            try:
                message, end = decode_bgp_message(raw, 0, len(raw), BgpContext())
            except DecodeError as exc:
                tlvs.append(MirroredMessage(0, raw, None, None, str(exc)))
            else:
                error = None if end == len(raw) else f"{len(raw) - end} bytes after the BGP message"
                tlvs.append(MirroredMessage(0, raw, message, None, error))
        elif tlv_type == 1:
            if length != 2:
                raise ContentError(f"route mirroring information TLV of {length} bytes", value.pos)
            tlvs.append(MirroredMessage(1, raw, None, value.u16()))
        else:
            tlvs.append(MirroredMessage(tlv_type, raw))
    return RouteMirroring(peer, tuple(tlvs))


_DECODERS = {
    1: _statistics_report,
    2: _peer_down,
    3: _peer_up,
    4: _initiation,
    5: _termination,
    6: _route_mirroring,
}
