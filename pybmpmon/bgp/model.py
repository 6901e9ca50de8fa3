"""Decoded BGP values (RFC 4271, 4760, 7911, 8277, 4364, 7432).

Strategy: route-level values sit on the hot path (a full table is over a million
of them), so they are NamedTuples, built with ``tuple.__new__`` by the decoders,
and prefixes and next hops are kept as their canonical text (``"10.0.0.0/8"``,
``"2001:db8::1"``): an ``ipaddress`` object costs about 3 µs to build, ten times
the rest of a prefix's decoding, and every consumer (JSON, PostgreSQL ``cidr``)
wants the text anyway.  Per-session and per-message values that are decoded
rarely (OPEN, NOTIFICATION, capabilities) are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

# (afi, safi) -> the family name used everywhere (logs, JSON, database).
FAMILY_NAMES = {
    (1, 1): "ipv4_unicast",
    (2, 1): "ipv6_unicast",
    (1, 2): "ipv4_multicast",
    (2, 2): "ipv6_multicast",
    (1, 4): "ipv4_labeled_unicast",
    (2, 4): "ipv6_labeled_unicast",
    (1, 128): "ipv4_vpn",
    (2, 128): "ipv6_vpn",
    (25, 70): "evpn",
}


def family_name(afi: int, safi: int) -> str:
    """The name of an AFI/SAFI pair; unknown pairs get ``afi<A>_safi<S>``."""
    name = FAMILY_NAMES.get((afi, safi))
    return name if name is not None else f"afi{afi}_safi{safi}"


class EvpnRoute(NamedTuple):
    """The fields of an EVPN NLRI (RFC 7432 §7, RFC 9136 §3).

    Fields a route type does not have are None.  ``esi`` is the 10-octet
    Ethernet Segment Identifier as colon-separated hex; ``mac`` is lower-case
    colon-separated hex; ``ip`` is the address of types 2, 3 and 4 (originating
    router or host); the type 5 prefix is in :attr:`Nlri.prefix`.
    """

    route_type: int
    esi: Optional[str] = None
    ethernet_tag: Optional[int] = None
    mac: Optional[str] = None
    ip: Optional[str] = None
    gateway: Optional[str] = None
    raw: Optional[bytes] = None  # the whole route for types this module cannot decode

    def key(self, rd: Optional[str], prefix: Optional[str]) -> str:
        """Text identifying the route within its RD, as in RFC 7432 §7 (labels excluded)."""
        parts = [f"type{self.route_type}", rd or "-"]
        if self.raw is not None:
            parts.append(self.raw.hex())
            return " ".join(parts)
        if self.esi is not None and self.route_type in (1, 4):
            parts.append(f"esi {self.esi}")
        if self.ethernet_tag is not None:
            parts.append(f"etag {self.ethernet_tag}")
        if self.mac is not None:
            parts.append(f"mac {self.mac}")
        if self.ip is not None:
            parts.append(f"ip {self.ip}")
        if prefix is not None:
            parts.append(f"prefix {prefix}")
        return " ".join(parts)


class Nlri(NamedTuple):
    """One route of an UPDATE.

    ``prefix`` is CIDR text, None only for EVPN routes that carry no prefix.
    ``path_id`` is the RFC 7911 path identifier when Add-Path is in use.
    ``rd`` is the route distinguisher as text (``"65000:100"``,
    ``"192.0.2.1:7"``) for VPN and EVPN families.  ``labels`` are the MPLS
    label values (20 bits each; for EVPN the raw 24-bit field, which may be a
    VNI).
    """

    prefix: Optional[str]
    path_id: Optional[int] = None
    rd: Optional[str] = None
    labels: tuple = ()
    evpn: Optional[EvpnRoute] = None

    @property
    def key(self) -> str:
        """The text that identifies this route within its family, path id aside."""
        if self.evpn is not None:
            return self.evpn.key(self.rd, self.prefix)
        if self.rd is not None:
            return f"{self.rd} {self.prefix}"
        return self.prefix  # type: ignore[return-value]


class RouteSet(NamedTuple):
    """The routes of one family in one UPDATE, announced or withdrawn.

    Classic IPv4 NLRI and withdrawn routes (no MP attribute) are reported as
    ``ipv4_unicast`` sets exactly like MP_REACH/MP_UNREACH ones, so consumers
    never see the difference.  For a family this codec does not decode,
    ``nlri`` is empty and ``raw`` holds the undecoded NLRI bytes.
    """

    afi: int
    safi: int
    afi_safi: str
    next_hop: Optional[str]
    nlri: tuple
    link_local_next_hop: Optional[str] = None
    raw: Optional[bytes] = None


class Attributes(NamedTuple):
    """The path attributes of an UPDATE except MP_REACH/MP_UNREACH.

    Decoded once per distinct attribute block and shared between UPDATEs (see
    ``BgpContext.cache``), so it must stay immutable.  A NamedTuple because a
    table dump with little sharing builds one per UPDATE, and a frozen
    dataclass of this width costs several microseconds to construct.

    - ``as_path``: tuple of ``(segment_type, (asn, ...))`` after the RFC 6793
      merge of AS4_PATH; segment types are :class:`~pybmpmon.iana.AsPathSegmentType`.
    - ``communities``: ``(asn, value)`` pairs (RFC 1997).
    - ``large_communities``: ``(global, local1, local2)`` triples (RFC 8092).
    - ``ext_communities``: raw 8-octet values (RFC 4360); see
      :func:`pybmpmon.bgp.attributes.format_ext_community`.
    - ``unknown``: ``(type, flags, hex)`` of every attribute not decoded here.
    - ``discarded``: one message per malformed attribute dropped under the
      RFC 7606 "attribute discard" rule.
    - ``wire``: what the set was decoded from: one octet (1 when the session
      used 4-octet ASNs, else 0), then the attribute block as received with
      MP_REACH/MP_UNREACH cut out.  Empty for a set not decoded from the wire.
      Equal wire means equal content, so the store identifies a set by a
      digest of it without formatting the set (see store/rows.py).
    """

    origin: Optional[int] = None
    as_path: tuple = ()
    next_hop: Optional[str] = None
    med: Optional[int] = None
    local_pref: Optional[int] = None
    atomic_aggregate: bool = False
    aggregator: Optional[tuple] = None  # (asn, address text)
    communities: tuple = ()
    originator_id: Optional[str] = None
    cluster_list: tuple = ()
    ext_communities: tuple = ()
    large_communities: tuple = ()
    only_to_customer: Optional[int] = None
    aigp: Optional[int] = None
    unknown: tuple = ()
    discarded: tuple = ()
    wire: bytes = b""


EMPTY_ATTRIBUTES = Attributes()


class Update(NamedTuple):
    """A decoded BGP UPDATE (RFC 4271 §4.3, RFC 4760).

    ``end_of_rib`` is the family name when the UPDATE is an End-of-RIB marker
    (RFC 4724 §2): empty for IPv4 unicast, a lone empty MP_UNREACH otherwise.
    """

    attributes: Attributes
    announced: tuple  # of RouteSet
    withdrawn: tuple  # of RouteSet
    end_of_rib: Optional[str] = None


@dataclass(frozen=True, slots=True)
class Capability:
    """One BGP capability from an OPEN (RFC 5492).

    ``value`` is the decoded form where the code is known:
    multiprotocol ``(afi, safi)``; four-octet AS the ASN; Add-Path a tuple of
    ``(afi, safi, send_receive)``; graceful restart ``{"restart_time", "flags",
    "families"}``; FQDN ``(hostname, domain)``; extended next hop a tuple of
    ``(afi, safi, nexthop_afi)``; others None.  ``raw`` is always kept.
    """

    code: int
    raw: bytes
    value: object = None


@dataclass(frozen=True, slots=True)
class Open:
    """BGP OPEN (RFC 4271 §4.2) with its capabilities."""

    version: int
    my_as: int
    hold_time: int
    bgp_id: str
    capabilities: tuple = ()  # of Capability
    other_params: tuple = ()  # (type, raw) of non-capability optional parameters

    @property
    def asn(self) -> int:
        """The real AS: the four-octet AS capability's value when present."""
        for cap in self.capabilities:
            if cap.code == 65 and cap.value is not None:
                return cap.value  # type: ignore[return-value]
        return self.my_as

    @property
    def four_octet_as(self) -> bool:
        return any(cap.code == 65 for cap in self.capabilities)

    @property
    def families(self) -> tuple:
        """(afi, safi) pairs from the multiprotocol capabilities."""
        return tuple(cap.value for cap in self.capabilities if cap.code == 1 and cap.value)

    def add_path(self) -> dict:
        """{(afi, safi): send_receive} from the Add-Path capability (RFC 7911 §4)."""
        result = {}
        for cap in self.capabilities:
            if cap.code == 69 and cap.value:
                for afi, safi, mode in cap.value:
                    result[(afi, safi)] = mode
        return result


@dataclass(frozen=True, slots=True)
class Notification:
    """BGP NOTIFICATION (RFC 4271 §4.5)."""

    code: int
    subcode: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """BGP KEEPALIVE (RFC 4271 §4.4)."""


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """BGP ROUTE-REFRESH (RFC 2918, RFC 7313 subtypes)."""

    afi: int
    safi: int
    subtype: int = 0


@dataclass(frozen=True, slots=True)
class UnknownBgpMessage:
    """A BGP message of a type this codec does not decode, kept raw."""

    type: int
    body: bytes


@dataclass(slots=True)
class BgpContext:
    """What decoding a session's UPDATEs depends on, learned from its OPENs.

    ``add_path`` holds the (afi, safi) pairs whose NLRI carry a path identifier
    in the direction being decoded.  ``cache`` maps raw attribute blocks to
    decoded :class:`Attributes`; it belongs to this context because the same
    bytes decode differently with 2-octet AS numbers.  It is bounded by
    ``cache_limit`` entries, cleared when full.  Strategy: small, because
    sharing is local (the pre/post-policy and Loc-RIB copies of an UPDATE come
    close together) and clearing a large cache frees tens of thousands of
    cold objects at once; measured on a full table, 2,000 entries decode
    faster than 20,000.
    """

    four_octet_as: bool = True
    add_path: frozenset = frozenset()
    cache: dict = field(default_factory=dict)
    cache_limit: int = 2000
