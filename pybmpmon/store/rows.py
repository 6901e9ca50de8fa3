"""Decoded BMP events (RFC 7854 §4) turned into what the database is given.

A :class:`BatchBuilder` takes the events of many routers in arrival order and
produces a :class:`Batch`: route *segments* (lines in PostgreSQL's COPY text
format for the staging table) interleaved with *operations* (Peer Up, Peer
Down, statistics, End-of-RIB, connect/disconnect, ...), so that one database
transaction can apply them in order.

Strategy, for speed on a full table (a million routes):

- Per route, one short COPY line: the scope (router, peer, RIB view, family)
  as a small number, the route's own fields and the digest of its attribute
  set.  The attribute set itself (next hop, AS path, communities...) becomes
  a line of its own, once per distinct set, and only until a batch holding it
  is committed: after that the database has it (route_attrs).  Unicast
  routes, nearly all of a table, take a short path.
- The same route key may occur several times in one batch (a flap).  Each
  occurrence gets a *generation* number: 0 for the first, 1 for the second...
  The database applies the state merge once per generation, so every
  statement sees each key at most once, in arrival order.  A segment is closed
  early when a key reaches ``max_gen`` occurrences, which bounds the number of
  statements.
- Events that touch route_state in bulk (Peer Down, End-of-RIB sweep, router
  disconnect) are *barriers*: the routes before them form one segment, the
  routes after them the next.  Other operations (Peer Up, statistics,
  Initiation, ...) touch other tables, so they only keep their order among
  themselves.

The operations' parameters come from operations.py.  Text from routers
(sysName, descriptions, Termination strings) never goes through COPY; it is
passed as query parameters after :func:`clean_text`.  :func:`copy_escape` is
the COPY-format escaping used for any non-fixed text that does go into a line.
"""

from __future__ import annotations

import os
import re
import struct
import time
import uuid
from hashlib import blake2b
from typing import Iterable, NamedTuple, Optional

from pybmpmon.bgp.attributes import (
    format_community,
    format_ext_community,
    format_large_community,
    origin_as,
)
from pybmpmon.bgp.model import Attributes, family_name
from pybmpmon.bmp.model import PeerHeader, RouteMonitoring
from pybmpmon.store.operations import clean_text, ip_text, operation, sane_time

NULL = "\\N"

ORIGINS = ("igp", "egp", "incomplete")
_WIRE_DOMAIN = b"pybmpmon-wire"  # BLAKE2b personalization of digests of wire octets
_WIRE_HASHER = blake2b(digest_size=8, person=_WIRE_DOMAIN)
_TEXT_HASHER = blake2b(digest_size=8)
_signed64 = struct.Struct(">q").unpack  # a digest as attr_hash (bigint)

# Pieces of the stage table's lines (columns in sql.CREATE_STAGE order).
_NO_EVPN = "\t".join([NULL] * 6)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_ARRAY_SPECIAL = frozenset('{}",\\ \t\n\r\'')


_ROWPATH_API = 3  # the API_VERSION of pybmpmon/_rowpath.c this module calls


def _load_rowpath():
    """The C accelerator, configured, or None.

    ``pybmpmon._rowpath`` is optional like ``pybmpmon._fastpath`` (see
    setup.py), and PYBMPMON_PURE_PYTHON=1 turns it off the same way: then
    every event takes :meth:`BatchBuilder._route_monitoring`, every route the
    loop in :meth:`BatchBuilder._route_set` and every set
    :func:`attribute_text`'s own code and every digest
    :func:`attribute_digest`'s, which stay the reference.
    """
    if os.environ.get("PYBMPMON_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from pybmpmon import _rowpath
    except ImportError:
        return None
    if getattr(_rowpath, "API_VERSION", None) != _ROWPATH_API:
        return None  # a stale build for other arguments: stay correct, not fast
    try:
        _rowpath.configure(Attributes)
    except (TypeError, ValueError):
        return None
    return _rowpath


_accelerator = _load_rowpath()
ROWPATH = _accelerator is not None  # whether the builder uses the accelerator
_route_lines = _accelerator.route_lines if ROWPATH else None
_attribute_text = _accelerator.attribute_text if ROWPATH else None
_wire_digest = _accelerator.wire_digest if ROWPATH else None
_route_events = None  # set at the end of the module, once what it calls back is defined


def copy_escape(text: str) -> str:
    """One field of COPY's text format: backslash, tab, CR and LF escaped, NUL replaced."""
    return clean_text(text).translate(_COPY_ESCAPES)


def pg_array(items: Iterable) -> str:
    """A PostgreSQL array literal (before COPY escaping) of the items' text."""
    parts = []
    for item in items:
        text = str(item)
        if not text or text.upper() == "NULL" or any(c in _ARRAY_SPECIAL for c in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(text)
    return "{" + ",".join(parts) + "}"


def _ip_or_null(text) -> str:
    """The address as COPY text, or NULL when it is not a valid address."""
    found = ip_text(text)
    return NULL if found is None else found


def _field(value) -> str:
    return NULL if value is None else copy_escape(str(value))


# Characters that force quoting inside an array literal, or escaping in COPY.
_SPECIAL = re.compile(r'[{}",\\\s\'\x00]')


def _safe_array(texts: list) -> str:
    """COPY text of an array of texts, NULL when empty; quoting only when needed."""
    if not texts:
        return NULL
    if _SPECIAL.search("".join(texts)) is None and "" not in texts and "NULL" not in texts:
        return "{" + ",".join(texts) + "}"
    return copy_escape(pg_array(texts))


def _number(value) -> str:
    return NULL if value is None else str(value)


def attribute_text(attrs, next_hop) -> str:
    """The COPY text of the set's stage_attrs line after its digest, no newline.

    Called once per set a batch is the first to send, so the fields the
    decoder gives as integers (ASNs, MED, LOCAL_PREF, communities) are
    written without escaping: digits need none.  With the C accelerator,
    the sets of the usual shape are written there.
    """
    if _attribute_text is not None:
        text = _attribute_text(attrs, _ip_or_null(next_hop))
        if text is not None:
            return text
    origin = attrs.origin
    if origin is not None:
        origin = ORIGINS[origin] if origin < 3 else str(origin)
    as_path = attrs.as_path
    if len(as_path) == 1:  # the common case: no list of the ASNs to build
        path = "{" + ",".join(map(str, as_path[0][1])) + "}"
    else:
        path = "{" + ",".join([str(asn) for _seg, asns in as_path for asn in asns]) + "}"
    communities = attrs.communities
    large = attrs.large_communities
    aggregator = attrs.aggregator
    cluster = attrs.cluster_list
    if cluster:
        cluster = [_ip_or_null(x) for x in cluster]
        cluster = NULL if NULL in cluster else _safe_array(cluster)
    return "\t".join((
        _ip_or_null(next_hop),
        NULL if origin is None else origin,
        path,
        _number(origin_as(as_path)),
        _number(attrs.med),
        _number(attrs.local_pref),
        "{" + ",".join(map(format_community, communities)) + "}" if communities else NULL,
        "{" + ",".join(map(format_large_community, large)) + "}" if large else NULL,
        _safe_array([format_ext_community(c) for c in attrs.ext_communities]),
        "t" if attrs.atomic_aggregate else "f",
        NULL if aggregator is None else _field(f"{aggregator[0]}:{aggregator[1]}"),
        _ip_or_null(attrs.originator_id),
        cluster or NULL,
    ))


def attribute_digest(attrs, next_hop) -> int:
    """The set's attr_hash: a BLAKE2b digest (8 bytes, signed), equal in every process.

    Strategy: a set decoded from the wire is named by a digest of
    ``Attributes.wire`` and the next hop (outside the wire for MP routes), so
    no UPDATE pays for formatting a set the database already has; only a set
    a batch is the first to send is formatted (:func:`attribute_text`).  A
    full table has too many distinct sets for any cache of them to hold.  The
    price: the same set sent in other octets (another attribute order, say)
    is stored twice, under two digests.  A set made by hand (no wire) is
    named by a digest of its text, in another BLAKE2b domain.
    """
    wire = attrs.wire
    if wire:
        if _wire_digest is not None:
            found = _wire_digest(next_hop, wire)  # the same, in C
            if found is not None:
                return found
        # The next hop's text holds no NUL: the two parts cannot run together.
        # (A copy of a keyed template: half the time of a new blake2b.)
        hasher = _WIRE_HASHER.copy()
        if next_hop:
            hasher.update(next_hop.encode())
        hasher.update(b"\0")
        hasher.update(wire)
    else:
        hasher = _TEXT_HASHER.copy()
        hasher.update(attribute_text(attrs, next_hop).encode())
    return _signed64(hasher.digest())[0]


class Segment:
    """Routes between two barriers: COPY lines plus what the database needs first."""

    __slots__ = ("lines", "attrs", "gens", "max_gen", "scopes", "peers", "routes")

    def __init__(self):
        self.lines: list = []
        self.attrs: list = []  # stage_attrs lines: attribute sets first used here
        # scope -> {route key in the scope -> last generation given}; the key
        # is the prefix text for a unicast route without path id (most of
        # them: no tuple to build and hash per route), else (nlri, path_id).
        self.gens: dict = {}
        self.max_gen = 0
        # (router_ip, peer_ip, peer_rd, rib, afi_safi, peer_asn) -> the small
        # number that stands for it in this segment's lines ("sref"): the
        # database parses one smallint per route instead of six fields.
        self.scopes: dict = {}
        self.peers: dict = {}  # (router_ip, type, rd, ip) -> (asn, bgp_id, time)
        self.routes = 0

    def ref(self, scope: tuple) -> int:
        found = self.scopes.get(scope)
        if found is None:
            found = self.scopes[scope] = len(self.scopes)
        return found


class Op(NamedTuple):
    """A non-route operation: ``kind`` and its parameters."""

    kind: str
    router_ip: str
    time: float
    data: dict


BARRIERS = frozenset({"peer_down", "end_of_rib", "disconnect"})


class Batch(NamedTuple):
    """What one transaction applies: ``parts`` are Segments and Ops in order."""

    batch_id: str
    parts: list
    route_count: int
    days: frozenset  # UTC day numbers (epoch // 86400) that route_updates rows fall on
    routers: dict  # router_ip -> last time seen in this batch
    items: list  # the submissions it was built from, to rebuild parts of it
    attr_digests: set  # digests of the attribute sets it carries (see BatchBuilder.confirm)


class BatchBuilder:
    """Accumulates submissions; :meth:`take` hands out the batch built so far.

    Attribute sets (see :func:`attribute_digest`): each distinct set is sent
    with every batch that uses it until one such batch is committed
    (:meth:`confirm`); later batches name it by digest only.  Sending it again
    is harmless (the database ignores a digest it has), forgetting it would
    not be, so a digest only counts as stored after its batch's COMMIT.
    Memory stays bounded: the stored digests are ``stored_size`` at most
    (when full, they start over; the price is sending some sets again).  They
    are also forgotten every ``stored_ttl`` seconds, so that a set is sent
    again (refreshing its last_sent) while it is in use: the database prunes
    sets by that date (sql.PRUNE_ATTRS).
    """

    def __init__(self, max_gen: int = 8, stored_size: int = 250000,
                 stored_ttl: float = 3600.0, clock=time.monotonic):
        self.max_gen = max_gen
        self.stored_size = stored_size
        self.stored_ttl = stored_ttl
        self._clock = clock
        self._last_attrs = self._last_next_hop = self._last_digest = None
        self._stored: set = set()  # digests in committed batches
        self._stored_since = clock()
        self._peer_cache: dict = {}
        self._last_peer: Optional[tuple] = None  # (address, router, flags, type, rd, found)
        self._reset()

    def _reset(self) -> None:
        self.parts: list = []
        self.pending_ops: list = []
        self.segment = Segment()
        self.route_count = 0
        self.days: set = set()
        self.routers: dict = {}
        self.items: list = []
        self.attr_digests: set = set()
        # The times of the last route UPDATE, as line text (see _route_monitoring).
        self._head_at = self._head_received = self._head = None
        # (segment, scope head, family, peer ASN, (scope, its sref key, the
        # sref's text, its generations)) of the last route set (see _route_set).
        self._last_scope: Optional[tuple] = None

    @property
    def empty(self) -> bool:
        return not self.items

    # -- input -------------------------------------------------------------

    def add_events(self, router_ip: str, events, received_at: Optional[float] = None) -> int:
        """Add the decoded events of one router; return how many routes they held."""
        if received_at is None:
            received_at = time.time()
        if not isinstance(events, (list, tuple)):
            events = list(events)
        self.items.append(("events", router_ip, events, received_at))
        before = self.route_count
        self._note_router(router_ip, received_at)
        fast = _route_events
        count = len(events)
        i = 0
        while i < count:
            if fast is not None:
                # The Route Monitoring events from i on, in C; it stops at
                # the first event this loop must take (see _rowevents.c).
                i = fast(self, router_ip, events, i, received_at)
                if i >= count:
                    break
            event = events[i]
            i += 1
            if type(event) is RouteMonitoring:
                self._route_monitoring(router_ip, event, received_at)
                continue
            op = operation(event, received_at)
            if op is not None:
                self._op(op[0], router_ip, op[1], op[2])
        return self.route_count - before

    def add_connect(self, router_ip: str, at: Optional[float] = None) -> None:
        at = time.time() if at is None else at
        self.items.append(("connect", router_ip, None, at))
        self._note_router(router_ip, at)
        self._op("connect", router_ip, at, {})

    def add_disconnect(self, router_ip: str, at: Optional[float] = None) -> None:
        at = time.time() if at is None else at
        self.items.append(("disconnect", router_ip, None, at))
        self._note_router(router_ip, at)
        self._op("disconnect", router_ip, at, {})

    def add_item(self, item) -> None:
        """Re-add a submission recorded in :attr:`Batch.items`."""
        kind, router_ip, events, at = item
        if kind == "events":
            self.add_events(router_ip, events, at)
        elif kind == "connect":
            self.add_connect(router_ip, at)
        else:
            self.add_disconnect(router_ip, at)

    def take(self, batch_id: Optional[str] = None) -> Batch:
        """The batch built so far; the builder starts a new one."""
        self._close_segment()
        self.parts.extend(self.pending_ops)
        batch = Batch(batch_id or str(uuid.uuid4()), self.parts, self.route_count,
                      frozenset(self.days), self.routers, self.items, self.attr_digests)
        self._reset()
        if len(self._peer_cache) > 10000:
            self._peer_cache.clear()
        return batch

    # -- helpers -----------------------------------------------------------

    def _note_router(self, router_ip: str, at: float) -> None:
        self.routers[router_ip] = at
        self.days.add(int(at // 86400))

    def _close_segment(self) -> None:
        if self.segment.lines:
            self.parts.append(self.segment)
            self.segment = Segment()

    def _op(self, kind: str, router_ip: str, at: float, data: dict) -> None:
        op = Op(kind, router_ip, at, data)
        self.days.add(int(at // 86400))
        if kind in BARRIERS:
            self._close_segment()
            self.parts.extend(self.pending_ops)
            self.pending_ops = []
            self.parts.append(op)
        else:
            self.pending_ops.append(op)

    def _peer(self, router_ip: str, peer: PeerHeader) -> tuple:
        """(scope prefix (router, peer, rd, rib), bgp_peers key) cached per peer and view."""
        last = self._last_peer
        if (last is not None and peer.address is last[0] and router_ip == last[1]
                and peer.flags == last[2] and peer.peer_type == last[3]
                and peer.distinguisher == last[4]):
            # The decoder shares a peer's fields between its messages: no
            # hashing of the address for a run of one peer's UPDATEs.
            return last[5]
        cache_key = (router_ip, peer.peer_type, peer.flags, peer.distinguisher, peer.address)
        found = self._peer_cache.get(cache_key)
        if found is None:
            peer_ip = str(peer.address)
            rd = peer.distinguisher
            found = ((router_ip, peer_ip, rd, peer.rib), (router_ip, peer.peer_type, rd, peer_ip))
            self._peer_cache[cache_key] = found
        self._last_peer = (peer.address, router_ip, peer.flags, peer.peer_type,
                           peer.distinguisher, found)
        return found

    def confirm(self, batch: Batch) -> None:
        """``batch`` is committed: the attribute sets it carried are stored."""
        now = self._clock()
        if (len(self._stored) + len(batch.attr_digests) > self.stored_size
                or now - self._stored_since >= self.stored_ttl):
            self._stored.clear()
            self._stored_since = now
        self._stored |= batch.attr_digests

    def _attrs(self, attrs, next_hop) -> int:
        """The digest of the attribute set, its line added to the segment if needed."""
        if attrs is self._last_attrs and next_hop == self._last_next_hop:
            # Consecutive UPDATEs often share one decoded set.
            digest = self._last_digest
        else:
            digest = attribute_digest(attrs, next_hop)
            self._last_attrs = attrs
            self._last_next_hop = next_hop
            self._last_digest = digest
        if digest not in self._stored and digest not in self.attr_digests:
            self.segment.attrs.append(f"{digest}\t{attribute_text(attrs, next_hop)}\n")
            self.attr_digests.add(digest)
        return digest

    # -- route monitoring (RFC 7854 §4.6) -----------------------------------

    def _route_monitoring(self, router_ip: str, event: RouteMonitoring, received_at: float) -> None:
        peer = event.peer
        update = event.update
        at = sane_time(peer.timestamp, received_at)
        if at != self._head_at or received_at != self._head_received:
            # A table dump stamps runs of UPDATEs alike: format the times once.
            day = int(at // 86400)
            if day not in self.days:
                self.days.add(day)
            self._head_at = at
            self._head_received = received_at
            self._head = f"\t{at:.6f}\t{received_at:.6f}\t"
        head = self._head
        scope_head, peer_key = self._peer(router_ip, peer)
        seg = self.segment
        seg.peers[peer_key] = (peer.asn, peer.bgp_id, at)
        attrs = update.attributes
        for rs in update.withdrawn:
            if rs.nlri:
                self._route_set(rs, head, scope_head, peer.asn, True, NULL)
        for rs in update.announced:
            if rs.nlri:
                digest = self._attrs(attrs, rs.next_hop or attrs.next_hop)
                self._route_set(rs, head, scope_head, peer.asn, False, digest)
        if update.end_of_rib is not None:
            family = update.end_of_rib
            self._op("end_of_rib", router_ip, at, {
                "peer_ip": scope_head[1], "peer_rd": scope_head[2], "rib": scope_head[3],
                "afi_safi": family, "received": received_at})

    def _route_set(self, rs, head: str, scope_head: tuple, asn: int, withdrawn: bool,
                   digest) -> None:
        family = rs.afi_safi or family_name(rs.afi, rs.safi)
        seg = self.segment
        last = self._last_scope
        if (last is not None and last[0] is seg and last[1] is scope_head
                and last[2] == family and last[3] == asn):
            # A run of one peer's UPDATEs in one family: no tuples to build and hash.
            scope, ref_key, sref, gens = last[4]
        else:
            scope = scope_head + (family,)
            ref_key = scope + (asn,)
            sref = f"{seg.ref(ref_key)}\t"
            gens = seg.gens.get(scope)
            if gens is None:
                gens = seg.gens[scope] = {}
            self._last_scope = (seg, scope_head, family, asn, (scope, ref_key, sref, gens))
        flag = "t" if withdrawn else "f"
        unicast = rs.safi in (1, 2) and rs.afi in (1, 2)
        # line = gen \t time \t received \t sref \t nlri \t prefix \t path_id \t rd \t flag
        #        \t attr_hash \t labels \t evpn...
        pre = head + sref
        simple_tail = f"\t0\t{NULL}\t{flag}\t{digest}\t{NULL}\t{_NO_EVPN}\n"
        max_gen = self.max_gen
        lines = seg.lines
        nlris = rs.nlri
        count = len(nlris)
        fast = _route_lines if unicast else None
        i = 0
        while i < count:
            if fast is not None:
                # The simple routes from i on, in C; it stops at the first
                # route this loop must take (see pybmpmon/_rowpath.c).
                stop, top = fast(lines, gens, nlris, i, pre, simple_tail, max_gen)
                seg.routes += stop - i
                if top > seg.max_gen:
                    seg.max_gen = top
                if stop == count:
                    break
                i = stop
            nlri = nlris[i]
            i += 1
            path_id = nlri.path_id or 0
            if unicast and not nlri.labels:
                # The database's key is (nlri = the prefix, path_id).
                if path_id:
                    key = (nlri.prefix, path_id)
                    tail = self._route_tail(nlri, flag, digest, unicast)
                else:
                    key = nlri.prefix
                    tail = None
            else:
                key = (nlri.key, path_id)
                tail = self._route_tail(nlri, flag, digest, unicast)
            gen = gens.get(key)
            if gen is None:
                gen = 0
            else:
                gen += 1
                if gen >= max_gen:
                    # Too many occurrences of one key: start a new segment.
                    self._close_segment()
                    seg = self.segment
                    pre = f"{head}{seg.ref(ref_key)}\t"
                    gens = seg.gens[scope] = {}
                    lines = seg.lines
                    gen = 0
                elif gen > seg.max_gen:
                    seg.max_gen = gen
            gens[key] = gen
            if tail is None:
                lines.append(f"{gen}{pre}{nlri.prefix}\t{nlri.prefix}{simple_tail}")
            else:
                lines.append(f"{gen}{pre}{tail}")
            seg.routes += 1
        self.route_count += count

    @staticmethod
    def _route_tail(nlri, flag: str, digest, unicast: bool) -> str:
        """nlri .. evpn fields of a non-simple route (VPN, labeled, EVPN, Add-Path)."""
        key = nlri.prefix if unicast else copy_escape(nlri.key)
        prefix = nlri.prefix if nlri.prefix is not None else NULL
        rd = copy_escape(nlri.rd) if nlri.rd is not None else NULL
        labels = pg_array(nlri.labels) if nlri.labels else NULL
        if flag == "t":
            labels = NULL  # withdrawn labels carry no meaning (RFC 8277 §2.4)
        evpn = nlri.evpn
        if evpn is None:
            evpn_text = _NO_EVPN
        else:
            evpn_text = "\t".join((
                str(evpn.route_type), _field(evpn.esi), _field(evpn.ethernet_tag),
                _field(evpn.mac), _ip_or_null(evpn.ip), _ip_or_null(evpn.gateway)))
        return (f"{key}\t{prefix}\t{nlri.path_id or 0}\t{rd}\t{flag}\t{digest}\t{labels}\t"
                f"{evpn_text}\n")


def _configure_route_events():
    """route_events, told the classes and functions it works with, or None."""
    if _accelerator is None:
        return None
    from pybmpmon.bgp.model import RouteSet, Update
    from pybmpmon.store.operations import SANE_FUTURE, SANE_PAST
    try:
        _accelerator.configure_events(RouteMonitoring, PeerHeader, Update, RouteSet, Attributes,
                                      globals(), attribute_digest, SANE_PAST, SANE_FUTURE)
    except (TypeError, ValueError):
        return None
    return _accelerator.route_events


_route_events = _configure_route_events()
