"""Decoded BMP messages (RFC 7854 §4, RFC 8671, RFC 9069).

``PeerHeader`` and ``RouteMonitoring`` are NamedTuples because one of each is
built per route-carrying message; the rest are frozen dataclasses.  Addresses
here are ``ipaddress`` objects: a per-peer header is decoded once per peer and
then reused from a cache, so their cost does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple, Optional, Union

from pybmpmon.bgp.model import Open, Notification, Update

IPAddress = Union[IPv4Address, IPv6Address]

RIB_ADJ_IN_PRE = "adj_in_pre"
RIB_ADJ_IN_POST = "adj_in_post"
RIB_LOC = "loc_rib"
RIB_ADJ_OUT_PRE = "adj_out_pre"
RIB_ADJ_OUT_POST = "adj_out_post"


class PeerHeader(NamedTuple):
    """The per-peer header (RFC 7854 §4.2).

    ``distinguisher`` is the 8-octet peer distinguisher rendered like a route
    distinguisher (``"0"`` when all zero, else ``"65000:1"`` / ``"192.0.2.1:1"``).
    ``timestamp`` is seconds since the epoch (float, microseconds kept); 0.0
    when the router sent zero.
    """

    peer_type: int
    flags: int
    distinguisher: str
    address: IPAddress
    asn: int
    bgp_id: IPv4Address
    timestamp: float

    @property
    def ipv6(self) -> bool:
        return bool(self.flags & 0x80)

    @property
    def post_policy(self) -> bool:
        return bool(self.flags & 0x40)

    @property
    def legacy_as_path(self) -> bool:
        """A flag: the AS_PATH of this peer's UPDATEs uses 2-octet ASNs."""
        return bool(self.flags & 0x20)

    @property
    def adj_rib_out(self) -> bool:
        """O flag (RFC 8671): the routes are the router's Adj-RIB-Out."""
        return self.peer_type != 3 and bool(self.flags & 0x10)

    @property
    def filtered(self) -> bool:
        """F flag (RFC 9069 §4.2), meaningful for Loc-RIB peers only."""
        return self.peer_type == 3 and bool(self.flags & 0x80)

    @property
    def rib(self) -> str:
        """The RIB view the routes of this header belong to."""
        if self.peer_type == 3:
            return RIB_LOC
        if self.flags & 0x10:
            return RIB_ADJ_OUT_POST if self.flags & 0x40 else RIB_ADJ_OUT_PRE
        return RIB_ADJ_IN_POST if self.flags & 0x40 else RIB_ADJ_IN_PRE

    @property
    def key(self) -> tuple:
        """What identifies one BGP peer of a router: (type, distinguisher, address)."""
        return (self.peer_type, self.distinguisher, self.address)


class InfoTlv(NamedTuple):
    """An Information TLV (RFC 7854 §4.4) or termination TLV (§4.5).

    ``value`` is text for the string types (invalid UTF-8 replaced), the
    reason code (int) for a termination reason, otherwise the raw bytes.
    """

    type: int
    value: Union[str, int, bytes]


class RouteMonitoring(NamedTuple):
    """RFC 7854 §4.6: one BGP UPDATE as the router saw it."""

    peer: PeerHeader
    update: Update


class Stat(NamedTuple):
    """One statistics counter (RFC 7854 §4.8).

    ``afi_safi`` is set for the per-AFI/SAFI gauges; ``value`` is an int for
    known types and the raw bytes for types this codec does not know.
    """

    type: int
    value: Union[int, bytes]
    afi: Optional[int] = None
    safi: Optional[int] = None


@dataclass(frozen=True, slots=True)
class StatisticsReport:
    peer: PeerHeader
    stats: tuple  # of Stat


@dataclass(frozen=True, slots=True)
class PeerDown:
    """RFC 7854 §4.9.

    ``notification`` is set for reasons 1 and 3, ``fsm_event`` for reason 2;
    ``data`` holds whatever else followed the reason (TLVs for reason 5/6).
    """

    peer: PeerHeader
    reason: int
    notification: Optional[Notification] = None
    fsm_event: Optional[int] = None
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class PeerUp:
    """RFC 7854 §4.10: the session's addresses, ports and both OPENs."""

    peer: PeerHeader
    local_address: IPAddress
    local_port: int
    remote_port: int
    sent_open: Open
    received_open: Open
    info: tuple = ()  # of InfoTlv


@dataclass(frozen=True, slots=True)
class Initiation:
    """RFC 7854 §4.3."""

    info: tuple  # of InfoTlv

    def text(self, tlv_type: int) -> Optional[str]:
        for tlv in self.info:
            if tlv.type == tlv_type and isinstance(tlv.value, str):
                return tlv.value
        return None


@dataclass(frozen=True, slots=True)
class Termination:
    """RFC 7854 §4.5; ``reason`` is the reason TLV's code when present."""

    info: tuple  # of InfoTlv
    reason: Optional[int] = None


class MirroredMessage(NamedTuple):
    """One Route Mirroring TLV (RFC 7854 §4.7).

    Type 0 carries a BGP message: ``message`` is its decoded form (or None if it
    did not decode) and ``raw`` its bytes.  Type 1 carries an information code
    in ``code``.  Unknown types keep only ``raw``.
    """

    type: int
    raw: bytes
    message: object = None
    code: Optional[int] = None
    error: Optional[str] = None


@dataclass(frozen=True, slots=True)
class RouteMirroring:
    peer: PeerHeader
    tlvs: tuple  # of MirroredMessage


BmpMessage = Union[
    RouteMonitoring, StatisticsReport, PeerDown, PeerUp, Initiation, Termination, RouteMirroring
]
