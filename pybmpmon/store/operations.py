"""Decoded BMP events other than routes, turned into the parameters of an operation.

Peer Up, Peer Down, statistics, Initiation, Termination and undecodable
messages each become one operation ``(kind, time, data)`` that
:class:`pybmpmon.store.rows.BatchBuilder` places in a batch and
:class:`pybmpmon.store.database.Store` applies with ordinary query
parameters (never COPY).  Router-supplied text goes through
:func:`clean_text` first: PostgreSQL text cannot hold NUL, so NUL becomes
U+FFFD (the Unicode replacement character), visibly; tabs, newlines and
backslashes are stored as they are.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Optional

from pybmpmon.bgp.model import family_name
from pybmpmon.bmp.model import (
    Initiation,
    PeerDown,
    PeerHeader,
    PeerUp,
    StatisticsReport,
    Termination,
)
from pybmpmon.iana import CapabilityCode, PeerDownReason, StatType, TerminationReason, name_of

# A per-peer header timestamp is used when it lies within this window around
# the receive time; otherwise (zero, a boot time, a clock far off) the receive
# time is used.
SANE_PAST = 86400.0
SANE_FUTURE = 300.0

# Raw bytes of an undecodable message kept for support, at most.
MAX_FAILURE_RAW = 65536


def clean_text(text: Optional[str]) -> Optional[str]:
    """Text that PostgreSQL can store: NUL (which text cannot hold) becomes U+FFFD."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text


def sane_time(header_time: float, received_at: float) -> float:
    """The per-peer header time when plausible, else the receive time (SPEC §4)."""
    if header_time and received_at - SANE_PAST <= header_time <= received_at + SANE_FUTURE:
        return header_time
    return received_at


def operation(event, received_at: float) -> Optional[tuple]:
    """``(kind, time, data)`` for a non-route event, None for what is not stored."""
    build = _BUILDERS.get(type(event))
    if build is not None:
        return build(event, received_at)
    if getattr(event, "error", None) is not None and hasattr(event, "raw"):
        return _failure(event, received_at)
    return None  # Route Mirroring: logged by the collector, not stored


def _peer_fields(peer: PeerHeader) -> dict:
    return {"peer_type": peer.peer_type, "peer_rd": peer.distinguisher,
            "peer_ip": str(peer.address), "peer_asn": peer.asn,
            "peer_bgp_id": str(peer.bgp_id)}


def _stats(event: StatisticsReport, received_at: float) -> tuple:
    rows = []
    for stat in event.stats:
        family = family_name(stat.afi, stat.safi) if stat.afi is not None else None
        if isinstance(stat.value, int) and stat.value < 1 << 63:
            value, raw = stat.value, None
        else:
            value = None
            raw = stat.value.hex() if isinstance(stat.value, (bytes, bytearray)) \
                else str(stat.value)
        rows.append((stat.type, name_of(StatType, stat.type), family, value, raw))
    return ("stats", sane_time(event.peer.timestamp, received_at),
            dict(_peer_fields(event.peer), rows=rows))


def _peer_up(event: PeerUp, received_at: float) -> tuple:
    sent, received = event.sent_open, event.received_open
    strings = [clean_text(t.value) for t in event.info
               if t.type == 0 and isinstance(t.value, str)]
    other = [_tlv_json(t) for t in event.info if not (t.type == 0 and isinstance(t.value, str))]
    hold = min(sent.hold_time, received.hold_time)
    families = sorted(family_name(*f) for f in set(sent.families) & set(received.families))
    modes = {1: "receive", 2: "send", 3: "both"}
    add_path = sorted(f"{family_name(afi, safi)}:{modes.get(mode, str(mode))}"
                      for (afi, safi), mode in received.add_path().items())
    data = _peer_fields(event.peer)
    data.update({
        "local_ip": str(event.local_address), "local_port": event.local_port,
        "remote_port": event.remote_port, "local_asn": sent.asn,
        "local_bgp_id": ip_text(sent.bgp_id), "peer_bgp_id": ip_text(received.bgp_id)
        or data["peer_bgp_id"], "hold_time": hold,
        "four_octet_as": sent.four_octet_as and received.four_octet_as,
        "families": families, "add_path": add_path,
        "capabilities": json.dumps({"sent": _caps_json(sent),
                                    "received": _caps_json(received)}),
        "description": "\n".join(strings) if strings else None,
        "info": json.dumps(other) if other else None,
        "received": received_at,
    })
    if received.asn and not data["peer_asn"]:
        data["peer_asn"] = received.asn
    return "peer_up", sane_time(event.peer.timestamp, received_at), data


def _peer_down(event: PeerDown, received_at: float) -> tuple:
    reason = name_of(PeerDownReason, event.reason)
    details = {"reason": reason}
    text = reason
    if event.notification is not None:
        details["notification_code"] = event.notification.code
        details["notification_subcode"] = event.notification.subcode
        if event.notification.data:
            details["notification_data"] = event.notification.data.hex()
        text += f" (notification {event.notification.code}/{event.notification.subcode})"
    if event.fsm_event is not None:
        details["fsm_event"] = event.fsm_event
        text += f" (fsm event {event.fsm_event})"
    if event.data:
        details["data"] = event.data.hex()
    data = _peer_fields(event.peer)
    data.update({"reason_code": event.reason, "reason_text": text, "details": details,
                 "received": received_at})
    return "peer_down", sane_time(event.peer.timestamp, received_at), data


def _initiation(event: Initiation, received_at: float) -> tuple:
    other = [_tlv_json(t) for t in event.info if t.type not in (1, 2)]
    return "initiation", received_at, {
        "sys_name": clean_text(event.text(2)), "sys_descr": clean_text(event.text(1)),
        "info": json.dumps(other) if other else None}


def _termination(event: Termination, received_at: float) -> tuple:
    strings = [clean_text(t.value) for t in event.info
               if t.type == 0 and isinstance(t.value, str)]
    reason = event.reason
    text = "\n".join(strings) if strings else None
    if reason is not None:
        text = name_of(TerminationReason, reason) + (f": {text}" if text else "")
    return "termination", received_at, {"reason": reason, "text": text}


def _failure(event, received_at: float) -> tuple:
    error = event.error
    peer = getattr(event, "peer", None)
    raw = bytes(getattr(event, "raw", b"") or b"")
    return "decode_failure", received_at, {
        "peer_ip": str(peer.address) if peer is not None else None,
        "peer_asn": peer.asn if peer is not None else None,
        "error_type": type(error).__name__,
        "error": clean_text(getattr(error, "message", None) or str(error)),
        "error_offset": getattr(error, "offset", None),
        "raw_length": len(raw), "raw": raw[:MAX_FAILURE_RAW]}


_BUILDERS = {StatisticsReport: _stats, PeerUp: _peer_up, PeerDown: _peer_down,
             Initiation: _initiation, Termination: _termination}


@functools.lru_cache(maxsize=65536)
def ip_text(text) -> Optional[str]:
    """The address in PostgreSQL's text form, or None when it is not a valid address.

    Cached: next hops repeat across a whole table (rows.py uses it per
    attribute set).
    """
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _jsonable(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return clean_text(str(value))


def _caps_json(open_msg) -> list:
    return [{"code": cap.code, "name": name_of(CapabilityCode, cap.code),
             "value": _jsonable(cap.value) if cap.value is not None else cap.raw.hex()}
            for cap in open_msg.capabilities]


def _tlv_json(tlv) -> dict:
    return {"type": tlv.type, "value": _jsonable(tlv.value)}
