"""Decoded BMP messages as JSON-ready dicts, for ``pybmpmon decode`` and logs.

Pure: model objects in (:mod:`pybmpmon.bmp.model`, :mod:`pybmpmon.bgp.model`),
dicts of str/int/float/bool/list/None out, nothing printed.  Field names follow
the RFCs' wording in snake_case and stay stable: operators grep and jq them.
Numbers a reader would have to look up (message types, reasons, counter types,
capability codes) are given both as the number and as a name; undecoded bytes
are given as lower-case hex.

Covers every message of RFC 7854 §4 (with RFC 8671 and RFC 9069 peer flags and
counters) and the BGP messages they carry (RFC 4271 §4).
"""

from __future__ import annotations

from typing import Optional

from pybmpmon.bgp.attributes import (
    as_path_list,
    format_community,
    format_ext_community,
    format_large_community,
)
from pybmpmon.bgp.model import (
    Attributes,
    Keepalive,
    Nlri,
    Notification,
    Open,
    RouteRefresh,
    RouteSet,
    UnknownBgpMessage,
    Update,
    family_name,
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
from pybmpmon.errors import BgpError, DecodeError
from pybmpmon.iana import (
    CapabilityCode,
    InfoTlvType,
    MirroringInfoCode,
    MirroringTlvType,
    Origin,
    PeerDownReason,
    PeerType,
    StatType,
    TerminationReason,
    TerminationTlvType,
    name_of,
)

# RFC 4271 §4.5 error codes and RFC 4486 / RFC 8538 / RFC 9384 Cease subcodes:
# a peer-down line is read by people who want "administrative_shutdown", not 2.
NOTIFICATION_CODES = {
    1: "message_header_error",
    2: "open_message_error",
    3: "update_message_error",
    4: "hold_timer_expired",
    5: "finite_state_machine_error",
    6: "cease",
    7: "route_refresh_message_error",
}
CEASE_SUBCODES = {
    1: "maximum_number_of_prefixes_reached",
    2: "administrative_shutdown",
    3: "peer_de_configured",
    4: "administrative_reset",
    5: "connection_rejected",
    6: "other_configuration_change",
    7: "connection_collision_resolution",
    8: "out_of_resources",
    9: "hard_reset",
    10: "bfd_down",
}
_SHUTDOWN_COMMUNICATION = (2, 4)  # Cease subcodes that may carry RFC 9003 text

_ADD_PATH_MODES = {1: "receive", 2: "send", 3: "both"}

# (bit, name) of the per-peer header flags (RFC 7854 §4.2, RFC 8671 §4).  For
# a Loc-RIB peer (RFC 9069 §4.2) bit 0x80 is F, and V/L/A/O are not defined.
_PEER_FLAGS = ((0x80, "V"), (0x40, "L"), (0x20, "A"), (0x10, "O"))
_LOC_RIB_FLAGS = ((0x80, "F"),)

BMP_TYPE_NAMES = {
    RouteMonitoring: "route_monitoring",
    StatisticsReport: "statistics_report",
    PeerDown: "peer_down",
    PeerUp: "peer_up",
    Initiation: "initiation",
    Termination: "termination",
    RouteMirroring: "route_mirroring",
}


def message_type(msg: object) -> str:
    """The ``type`` name of a decoded BMP message."""
    return BMP_TYPE_NAMES.get(type(msg), type(msg).__name__.lower())


def render_message(msg: object) -> dict:
    """One decoded BMP message as a dict, ``type`` first."""
    renderer = _RENDERERS.get(type(msg))
    if renderer is None:
        raise TypeError(f"not a decoded BMP message: {type(msg).__name__}")
    return renderer(msg)


# -- per-peer header -------------------------------------------------------


def peer_flag_names(peer_type: int, flags: int) -> list:
    """Names of the set flag bits; bits without a name come out as hex."""
    table = _LOC_RIB_FLAGS if peer_type == 3 else _PEER_FLAGS
    names = []
    known = 0
    for bit, name in table:
        known |= bit
        if flags & bit:
            names.append(name)
    rest = flags & ~known & 0xFF
    if rest:
        names.append(f"0x{rest:02x}")
    return names


def render_peer(peer: PeerHeader) -> dict:
    """The per-peer header (RFC 7854 §4.2)."""
    return {
        "peer_type": name_of(PeerType, peer.peer_type),
        "flags": peer_flag_names(peer.peer_type, peer.flags),
        "distinguisher": peer.distinguisher,
        "address": str(peer.address),
        "asn": peer.asn,
        "bgp_id": str(peer.bgp_id),
        "timestamp": peer.timestamp,
    }


# -- route monitoring ------------------------------------------------------


def render_route_monitoring(msg: RouteMonitoring) -> dict:
    """Route Monitoring (RFC 7854 §4.6): the RIB view, attributes and routes."""
    update = msg.update
    out = {
        "type": "route_monitoring",
        "peer": render_peer(msg.peer),
        "rib": msg.peer.rib,
    }
    out.update(render_update_body(update))
    return out


def render_update_body(update: Update) -> dict:
    """``attributes``, ``routes`` and, for a marker, ``end_of_rib`` of an UPDATE."""
    out = {"attributes": render_attributes(update.attributes), "routes": render_routes(update)}
    if update.end_of_rib is not None:
        out["end_of_rib"] = update.end_of_rib
    return out


def render_attributes(attrs: Attributes) -> dict:
    """Path attributes (RFC 4271 §5 and friends); absent ones are left out."""
    out: dict = {}
    if attrs.origin is not None:
        out["origin"] = name_of(Origin, attrs.origin)
    if attrs.as_path:
        out["as_path"] = as_path_list(attrs.as_path)
    if attrs.next_hop is not None:
        out["next_hop"] = attrs.next_hop
    if attrs.med is not None:
        out["med"] = attrs.med
    if attrs.local_pref is not None:
        out["local_pref"] = attrs.local_pref
    if attrs.atomic_aggregate:
        out["atomic_aggregate"] = True
    if attrs.aggregator is not None:
        asn, address = attrs.aggregator
        out["aggregator"] = {"asn": asn, "address": str(address)}
    if attrs.communities:
        out["communities"] = [format_community(c) for c in attrs.communities]
    if attrs.large_communities:
        out["large_communities"] = [format_large_community(c) for c in attrs.large_communities]
    if attrs.ext_communities:
        out["ext_communities"] = [format_ext_community(c) for c in attrs.ext_communities]
    if attrs.originator_id is not None:
        out["originator_id"] = str(attrs.originator_id)
    if attrs.cluster_list:
        out["cluster_list"] = [str(c) for c in attrs.cluster_list]
    if attrs.only_to_customer is not None:
        out["only_to_customer"] = attrs.only_to_customer
    if attrs.aigp is not None:
        out["aigp"] = attrs.aigp
    if attrs.unknown:
        out["unknown"] = [
            {
                "type": code,
                "flags": flags,
                "hex": value if isinstance(value, str) else bytes(value).hex(),
            }
            for code, flags, value in attrs.unknown
        ]
    if attrs.discarded:
        out["discarded"] = [str(d) for d in attrs.discarded]
    return out


def render_routes(update: Update) -> list:
    """Withdrawals first (their order in an UPDATE), then announcements."""
    routes: list = []
    for route_set in update.withdrawn:
        _add_route_set(routes, route_set, "withdraw")
    for route_set in update.announced:
        _add_route_set(routes, route_set, "announce")
    return routes


def _add_route_set(routes: list, route_set: RouteSet, action: str) -> None:
    afi_safi = route_set.afi_safi
    if not route_set.nlri and route_set.raw is not None:
        # A family this codec does not decode: show it, undecoded.
        entry = {"action": action, "afi_safi": afi_safi, "raw": bytes(route_set.raw).hex()}
        if action == "announce" and route_set.next_hop is not None:
            entry["next_hop"] = route_set.next_hop
        routes.append(entry)
        return
    for nlri in route_set.nlri:
        entry = render_nlri(nlri)
        entry["action"] = action
        entry["afi_safi"] = afi_safi
        if action == "announce":
            if route_set.next_hop is not None:
                entry["next_hop"] = route_set.next_hop
            if route_set.link_local_next_hop is not None:
                entry["link_local_next_hop"] = route_set.link_local_next_hop
        routes.append(_action_first(entry))


def _action_first(entry: dict) -> dict:
    # Key order only matters to the human reading the line.
    out = {"action": entry.pop("action"), "afi_safi": entry.pop("afi_safi")}
    out.update(entry)
    return out


def render_nlri(nlri: Nlri) -> dict:
    """One route's own fields: prefix, path id, RD, labels, EVPN fields."""
    out: dict = {}
    if nlri.prefix is not None:
        out["prefix"] = nlri.prefix
    if nlri.path_id is not None:
        out["path_id"] = nlri.path_id
    if nlri.rd is not None:
        out["rd"] = nlri.rd
    if nlri.labels:
        out["labels"] = list(nlri.labels)
    evpn = nlri.evpn
    if evpn is not None:
        out["route_type"] = evpn.route_type
        for name in ("esi", "ethernet_tag", "mac", "ip", "gateway"):
            value = getattr(evpn, name)
            if value is not None:
                out[name] = value
        if evpn.raw is not None:
            out["raw"] = bytes(evpn.raw).hex()
    return out


# -- statistics, peer down, peer up ---------------------------------------


def render_stat(stat: Stat) -> dict:
    """One counter (RFC 7854 §4.8); unknown types keep their bytes as hex."""
    out: dict = {"type": stat.type, "name": name_of(StatType, stat.type)}
    if stat.afi is not None:
        out["afi_safi"] = family_name(stat.afi, stat.safi if stat.safi is not None else 0)
    if isinstance(stat.value, int):
        out["value"] = stat.value
    else:
        out["hex"] = bytes(stat.value).hex()
    return out


def render_notification(notification: Notification) -> dict:
    """A NOTIFICATION (RFC 4271 §4.5) with names for the code and Cease subcode."""
    code, subcode = notification.code, notification.subcode
    out: dict = {
        "code": code,
        "subcode": subcode,
        "code_name": NOTIFICATION_CODES.get(code, f"unknown_{code}"),
    }
    if code == 6:
        out["subcode_name"] = CEASE_SUBCODES.get(subcode, f"unknown_{subcode}")
    data = bytes(notification.data)
    out["data"] = data.hex()
    if code == 6 and subcode in _SHUTDOWN_COMMUNICATION:
        text = shutdown_communication(data)
        if text is not None:
            out["message"] = text
    return out


def shutdown_communication(data: bytes) -> Optional[str]:
    """The RFC 9003 §2 text (length octet + UTF-8) of an admin Cease, if well formed."""
    if not data or data[0] == 0 or data[0] + 1 != len(data):
        return None
    try:
        return data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def render_peer_down(msg: PeerDown) -> dict:
    """Peer Down (RFC 7854 §4.9): reason, then NOTIFICATION or FSM event."""
    out: dict = {
        "type": "peer_down",
        "peer": render_peer(msg.peer),
        "reason": msg.reason,
        "reason_name": name_of(PeerDownReason, msg.reason),
    }
    if msg.notification is not None:
        out["notification"] = render_notification(msg.notification)
    if msg.fsm_event is not None:
        out["fsm_event"] = msg.fsm_event
    if msg.data:
        out["data"] = bytes(msg.data).hex()
    return out


def render_peer_up(msg: PeerUp) -> dict:
    """Peer Up (RFC 7854 §4.10) with both OPENs and the information TLVs."""
    return {
        "type": "peer_up",
        "peer": render_peer(msg.peer),
        "local_address": str(msg.local_address),
        "local_port": msg.local_port,
        "remote_port": msg.remote_port,
        "sent_open": render_open(msg.sent_open),
        "received_open": render_open(msg.received_open),
        "info": [render_info_tlv(tlv) for tlv in msg.info],
    }


def render_open(msg: Open) -> dict:
    """An OPEN (RFC 4271 §4.2) with its capabilities (RFC 5492) by name."""
    out: dict = {
        "version": msg.version,
        "my_as": msg.my_as,
        "asn": msg.asn,
        "hold_time": msg.hold_time,
        "bgp_id": str(msg.bgp_id),
        "capabilities": [render_capability(cap) for cap in msg.capabilities],
        "families": [family_name(afi, safi) for afi, safi in msg.families],
    }
    add_path = msg.add_path()
    if add_path:
        out["add_path"] = [
            {
                "afi_safi": family_name(afi, safi),
                "mode": _ADD_PATH_MODES.get(mode, f"unknown_{mode}"),
            }
            for (afi, safi), mode in add_path.items()
        ]
    if msg.other_params:
        out["other_params"] = [
            {"type": ptype, "hex": bytes(raw).hex()} for ptype, raw in msg.other_params
        ]
    return out


def render_capability(cap) -> dict:
    """One capability: code, name, and its decoded value where there is one."""
    code = cap.code
    out: dict = {"code": code, "name": name_of(CapabilityCode, code)}
    value = cap.value
    if value is None:
        if cap.raw:
            out["hex"] = bytes(cap.raw).hex()
        return out
    if code == 1:
        afi, safi = value
        out["afi_safi"] = family_name(afi, safi)
    elif code == 65:
        out["asn"] = value
    elif code == 69:
        out["families"] = [
            {
                "afi_safi": family_name(afi, safi),
                "mode": _ADD_PATH_MODES.get(mode, f"unknown_{mode}"),
            }
            for afi, safi, mode in value
        ]
    elif code == 5:
        out["families"] = [
            {"afi_safi": family_name(afi, safi), "next_hop_afi": nh_afi}
            for afi, safi, nh_afi in value
        ]
    elif code == 73 and isinstance(value, tuple) and len(value) == 2:
        out["hostname"], out["domain"] = value
    else:
        out["value"] = jsonable(value)
    return out


def render_info_tlv(tlv: InfoTlv, names: type = InfoTlvType) -> dict:
    """An Information TLV (RFC 7854 §4.4): text as text, anything else as hex."""
    out: dict = {"type": tlv.type, "name": name_of(names, tlv.type)}
    value = tlv.value
    if isinstance(value, (str, int)):
        out["value"] = value
    else:
        out["hex"] = bytes(value).hex()
    return out


def render_termination(msg: Termination) -> dict:
    """Termination (RFC 7854 §4.5): TLVs and the reason by name."""
    info = []
    for tlv in msg.info:
        entry = render_info_tlv(tlv, TerminationTlvType)
        if tlv.type == 1 and isinstance(tlv.value, int):
            entry["reason_name"] = name_of(TerminationReason, tlv.value)
        info.append(entry)
    out: dict = {"type": "termination", "info": info}
    if msg.reason is not None:
        out["reason"] = msg.reason
        out["reason_name"] = name_of(TerminationReason, msg.reason)
    return out


# -- route mirroring and the BGP messages it carries -----------------------


def render_mirrored(tlv: MirroredMessage) -> dict:
    """A Route Mirroring TLV (RFC 7854 §4.7)."""
    out: dict = {"type": tlv.type, "name": name_of(MirroringTlvType, tlv.type)}
    if tlv.type == 1 and tlv.code is not None:
        out["code"] = tlv.code
        out["code_name"] = name_of(MirroringInfoCode, tlv.code)
        return out
    if tlv.message is not None:
        out["message"] = render_bgp_message(tlv.message)
    else:
        if tlv.error is not None:
            out["error"] = tlv.error
        out["hex"] = bytes(tlv.raw).hex()
    return out


def render_bgp_message(msg: object) -> dict:
    """A BGP message (RFC 4271 §4) as found inside a mirroring TLV."""
    if isinstance(msg, Update):
        out: dict = {"bgp_type": "update"}
        out.update(render_update_body(msg))
        return out
    if isinstance(msg, Open):
        out = {"bgp_type": "open"}
        out.update(render_open(msg))
        return out
    if isinstance(msg, Notification):
        out = {"bgp_type": "notification"}
        out.update(render_notification(msg))
        return out
    if isinstance(msg, Keepalive):
        return {"bgp_type": "keepalive"}
    if isinstance(msg, RouteRefresh):
        return {
            "bgp_type": "route_refresh",
            "afi_safi": family_name(msg.afi, msg.safi),
            "subtype": msg.subtype,
        }
    if isinstance(msg, UnknownBgpMessage):
        return {"bgp_type": f"unknown_{msg.type}", "hex": bytes(msg.body).hex()}
    return {"bgp_type": type(msg).__name__.lower(), "value": jsonable(msg)}


def render_statistics_report(msg: StatisticsReport) -> dict:
    """Statistics Report (RFC 7854 §4.8)."""
    return {
        "type": "statistics_report",
        "peer": render_peer(msg.peer),
        "stats": [render_stat(stat) for stat in msg.stats],
    }


def render_initiation(msg: Initiation) -> dict:
    """Initiation (RFC 7854 §4.3)."""
    return {"type": "initiation", "info": [render_info_tlv(tlv) for tlv in msg.info]}


def render_route_mirroring(msg: RouteMirroring) -> dict:
    """Route Mirroring (RFC 7854 §4.7)."""
    return {
        "type": "route_mirroring",
        "peer": render_peer(msg.peer),
        "tlvs": [render_mirrored(tlv) for tlv in msg.tlvs],
    }


_RENDERERS = {
    RouteMonitoring: render_route_monitoring,
    StatisticsReport: render_statistics_report,
    PeerDown: render_peer_down,
    PeerUp: render_peer_up,
    Initiation: render_initiation,
    Termination: render_termination,
    RouteMirroring: render_route_mirroring,
}


# -- errors and summaries ----------------------------------------------------


def render_error(
    error: DecodeError, raw: bytes, offset: int, peer: Optional[PeerHeader] = None
) -> dict:
    """A message that failed to decode: where it starts, why, and its bytes."""
    out: dict = {
        "type": "error",
        "offset": offset,
        "error": str(error),
        "error_type": type(error).__name__,
        "error_offset": error.offset,
    }
    if isinstance(error, BgpError):
        out["bgp_code"] = error.code
        out["bgp_subcode"] = error.subcode
    if peer is not None:
        out["peer"] = render_peer(peer)
    out["hex"] = bytes(raw).hex()
    return out


def jsonable(value: object) -> object:
    """*value* with tuples, sets, bytes and addresses made JSON-friendly."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)
