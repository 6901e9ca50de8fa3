"""One router's BMP stream, from bytes to decoded messages, without I/O.

A :class:`RouterSession` frames the stream (RFC 7854 §4.1), decodes each
message, and keeps what later messages of the same stream depend on:

- per BGP peer, the capabilities both OPENs of its Peer Up negotiated
  (RFC 7854 §4.10): four-octet AS numbers (RFC 6793) and Add-Path per
  AFI/SAFI and direction (RFC 7911 §4);
- the A flag of the per-peer header, which says the AS_PATH is in the legacy
  2-octet form whatever was negotiated (RFC 7854 §4.2);
- Loc-RIB peers (RFC 9069), which routers such as GoBGP announce without a
  Peer Up: they default to four-octet AS numbers and no path identifiers.

A framing error ends the stream because nothing after it can be trusted:
:meth:`RouterSession.feed` first returns the events of the messages that were
whole before the bad header, with the error in :attr:`RouterSession.error`,
and raises it from then on (at once when nothing preceded it).  A content
error becomes a :class:`DecodeFailure` event and the stream goes on.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from pybmpmon.bgp.model import BgpContext
from pybmpmon.bmp.decode import decode_bmp, decode_peer_header
from pybmpmon.bmp.framer import DEFAULT_MAX_MESSAGE_SIZE, Framer
from pybmpmon.bmp.model import (
    Initiation,
    PeerDown,
    PeerHeader,
    PeerUp,
    RouteMonitoring,
    Termination,
)
from pybmpmon.errors import ContentError, DecodeError

# Message types that carry a per-peer header (RFC 7854 §4.2): all but
# Initiation (4) and Termination (5).
_TYPES_WITH_PEER_HEADER = frozenset({0, 1, 2, 3, 6})

# Add-Path send/receive values (RFC 7911 §4).
_RECEIVE = 1
_SEND = 2


class DecodeFailure(NamedTuple):
    """A framed message that could not be decoded; the session went on.

    ``offset`` is where the message starts in the stream, ``raw`` the whole
    message, ``peer`` its per-peer header when that much could be decoded.
    """

    error: DecodeError
    raw: bytes
    offset: int
    peer: Optional[PeerHeader] = None


class UnknownFamily(NamedTuple):
    """The first UPDATE of an AFI/SAFI this codec does not decode, per peer."""

    afi: int
    safi: int
    peer: PeerHeader


class _Peer:
    """What one BGP peer's Peer Up negotiated."""

    __slots__ = ("four_octet_as", "add_path_in", "add_path_out")

    def __init__(
        self, four_octet_as: bool = True, add_path_in=frozenset(), add_path_out=frozenset()
    ):
        self.four_octet_as = four_octet_as
        self.add_path_in = add_path_in
        self.add_path_out = add_path_out


class RouterSession:
    """Decode one router's BMP byte stream, keeping per-peer session state."""

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self._framer = Framer(max_message_size)
        self._peers: dict = {}  # PeerHeader.key -> _Peer
        self._contexts: dict = {}  # (peer type, distinguisher, address, flags & A|O) -> BgpContext
        self._peer_cache: dict = {}
        self._unknown_families: set = set()
        self.offset = 0  # stream offset of the next message
        self.sys_name: Optional[str] = None
        self.sys_descr: Optional[str] = None
        self.terminated = False
        # Called with each whole message before it is decoded (the DEBUG hex dump).
        self.on_message = None

    @property
    def error(self):
        """The :class:`FramingError` that ended the stream, or None."""
        return self._framer.error

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole message."""
        return self._framer.buffered

    def feed(self, data: bytes) -> list:
        """Decode every message completed by *data*; return the events in order."""
        events: list = []
        append = events.append
        on_message = self.on_message
        context_for = self._context_for
        peer_cache = self._peer_cache
        offset = self.offset
        # Strategy: the per-message work is inlined here (no call and no list
        # per message); Route Monitoring is nearly every message of a stream.
        for raw in self._framer.feed(data):
            if on_message is not None:
                on_message(raw)
            start = offset
            offset += len(raw)
            try:
                message = decode_bmp(raw, context_for, peer_cache)
            except ContentError as error:
                append(DecodeFailure(error, raw, start, self._peer_of(raw)))
                continue
            append(message)
            if type(message) is RouteMonitoring:
                update = message.update
                for route_set in update.announced + update.withdrawn:
                    if route_set.raw is not None:
                        self._note_unknown_family(message, route_set, events)
                        break
            else:
                self._remember(message)
        self.offset = offset
        return events

    def _context_for(self, peer: PeerHeader) -> BgpContext:
        """The decoding context of a route monitoring message's peer and view."""
        key = (peer[0], peer[2], peer[3], peer[1] & 0x30)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = self._new_context(peer)
        return ctx

    def _new_context(self, peer: PeerHeader) -> BgpContext:
        state = self._peers.get(peer.key)
        if state is None:
            state = _Peer()
        if peer.legacy_as_path:
            four_octet_as = False
        else:
            four_octet_as = state.four_octet_as
        add_path = state.add_path_out if peer.adj_rib_out else state.add_path_in
        return BgpContext(four_octet_as=four_octet_as, add_path=add_path)

    def _remember(self, message) -> None:
        kind = type(message)
        if kind is PeerUp:
            self._forget_peer(message.peer)
            self._peers[message.peer.key] = _negotiated(message)
        elif kind is PeerDown:
            self._forget_peer(message.peer)
        elif kind is Initiation:
            self.sys_name = message.text(2) or self.sys_name
            self.sys_descr = message.text(1) or self.sys_descr
        elif kind is Termination:
            self.terminated = True

    def _forget_peer(self, peer: PeerHeader) -> None:
        self._peer_cache.clear()  # it holds each peer's context too
        self._peers.pop(peer.key, None)
        for key in [k for k in self._contexts if k[:3] == peer.key]:
            del self._contexts[key]

    def _note_unknown_family(self, message: RouteMonitoring, route_set, events: list) -> None:
        key = (message.peer.key, route_set.afi, route_set.safi)
        if key not in self._unknown_families:
            self._unknown_families.add(key)
            events.append(UnknownFamily(route_set.afi, route_set.safi, message.peer))

    def _peer_of(self, raw: bytes) -> Optional[PeerHeader]:
        """The per-peer header of a message that failed to decode, if readable."""
        if len(raw) < 48 or raw[5] not in _TYPES_WITH_PEER_HEADER:
            return None
        try:
            return decode_peer_header(raw, 6)
        except DecodeError:
            return None


def _negotiated(peer_up: PeerUp) -> _Peer:
    """Capabilities in force for a peer, from the OPENs both sides sent.

    A capability is in force only when both OPENs carry it.  For Add-Path the
    directions cross: the monitored router receives path identifiers from the
    peer (its Adj-RIB-In) when it announced "receive" and the peer "send", and
    sends them (Adj-RIB-Out) in the opposite case.
    """
    sent, received = peer_up.sent_open, peer_up.received_open
    sent_modes = sent.add_path()
    received_modes = received.add_path()
    add_path_in = set()
    add_path_out = set()
    for family, mode in sent_modes.items():
        other = received_modes.get(family, 0)
        if mode & _RECEIVE and other & _SEND:
            add_path_in.add(family)
        if mode & _SEND and other & _RECEIVE:
            add_path_out.add(family)
    return _Peer(
        four_octet_as=sent.four_octet_as and received.four_octet_as,
        add_path_in=frozenset(add_path_in),
        add_path_out=frozenset(add_path_out),
    )
