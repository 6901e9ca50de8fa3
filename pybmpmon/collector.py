"""The BMP listener: one greenlet per router connection (RFC 7854 §3.2).

The only code that touches router sockets.  A gevent ``StreamServer`` spawns
:meth:`Collector.handle` for each connection, from a pool that caps how many
routers are served at once.  The handler owns its connection: it reads,
decodes with a :class:`~pybmpmon.session.RouterSession`, reports what the
operator must know (logs, Sentry), and hands the decoded events to the store.
The store's bounded queue blocks the handler when the database falls behind,
so the router is slowed by TCP backpressure instead of growing our memory.

Strategy: the events of one socket read are handed over as one list, so a
full-table load costs one queue operation per 64 KiB, not per route.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from pybmpmon import sentry
from pybmpmon.bmp.model import (
    Initiation,
    PeerDown,
    PeerUp,
    RouteMirroring,
    RouteMonitoring,
    StatisticsReport,
    Termination,
)
from pybmpmon.errors import BgpError, FramingError
from pybmpmon.iana import PeerDownReason, TerminationReason, name_of
from pybmpmon.session import DecodeFailure, RouterSession, UnknownFamily

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_YIELD = 1e-5  # seconds: a yield that lets the loop poll the sockets (see _read)
HEX_DUMP_BYTES = 256
PARSE_ERROR_BYTES = 4096


class RouterConnection:
    """One router's connection: its session and the counters route_stats reports."""

    def __init__(self, router_ip: str, port: int, sock, session: RouterSession):
        self.router_ip = router_ip
        self.port = port
        self.sock = sock
        self.session = session
        self.connected_at = time.monotonic()
        self.messages = 0
        self.routes = 0
        self.errors = 0
        self.families: Counter = Counter()
        self.reported_routes = 0
        self.reported_messages = 0
        self.reported_at = self.connected_at
        self.connected_wall = time.time()
        self.announced = False  # whether the store was told of the connection

    @property
    def name(self) -> str:
        return self.session.sys_name or self.router_ip


class Collector:
    """Accept BMP connections and feed their decoded messages to *store*.

    *store* is what the routes go to (:class:`pybmpmon.store.writer.Writer`);
    the collector calls ``store.router_connected(router_ip, when)``,
    ``store.submit(router_ip, events, when)`` (blocks while the store's queue
    is full: backpressure) and ``store.router_disconnected(router_ip, when)``.
    Messages that failed to decode travel as :class:`DecodeFailure` events,
    which the store keeps (table decode_failures, view parse_errors).
    """

    def __init__(self, settings, store):
        self.settings = settings
        self.store = store
        self.connections: set = set()
        self._live: Counter = Counter()  # router_ip -> open connections
        self._stopping = False
        self._pool = Pool(settings.max_connections)
        self.server = StreamServer(
            (settings.bmp_listen_host, settings.bmp_listen_port), self.handle, spawn=self._pool
        )
        self._stats_greenlet = None

    @property
    def address(self) -> tuple:
        """The (host, port) the server listens on (port resolved when 0 was asked)."""
        return self.server.address

    def start(self) -> None:
        self.server.start()
        host, port = self.server.address[:2]
        log.info("bmp_listening", extra={"host": host, "port": port})
        self._stats_greenlet = gevent.spawn(self._report_stats_forever)

    def stop(self, timeout: float) -> None:
        """Stop accepting, stop reading, and wait up to *timeout* for the handlers.

        Each handler finishes the events of the read it is processing (they are
        accepted data) and then returns; a router blocked on a full store queue
        is waited for like the others.
        """
        self._stopping = True
        self.server.close()
        for conn in list(self.connections):
            _shutdown_read(conn.sock)
        self._pool.join(timeout=timeout)
        if self._pool:
            log.warning("router_handlers_killed", extra={"count": len(self._pool)})
            self._pool.kill(timeout=1)
        if self._stats_greenlet is not None:
            self._stats_greenlet.kill()

    # --- one router --------------------------------------------------------------------

    def handle(self, sock, address) -> None:
        """Serve one router connection until it closes (the StreamServer handler)."""
        router_ip = _router_ip(address[0])
        session = RouterSession(self.settings.max_message_size)
        conn = RouterConnection(router_ip, address[1], sock, session)
        try:
            _enable_keepalive(sock)
            self._open(conn)
            self._read(conn, sock)
        except Exception:  # the hub would print it to stderr, not to the log
            log.exception("router_handler_failed", extra={"router": router_ip})
        finally:
            self._close(conn)
            sock.close()

    def _open(self, conn: RouterConnection) -> None:
        self.connections.add(conn)
        self._live[conn.router_ip] += 1
        if log.isEnabledFor(logging.DEBUG):
            conn.session.on_message = lambda raw: _hex_dump(conn, raw)
        log.info("router_connected", extra={"router": conn.router_ip, "port": conn.port})
        # The store hears of the connection with the first events (see
        # _hand_over): its queue may be full, and a new router must still be
        # read, decoded and logged while other routers' batches are written.

    def _read(self, conn: RouterConnection, sock) -> None:
        session = conn.session
        while not self._stopping:
            try:
                data = sock.recv(READ_SIZE)
            except OSError as error:
                if not self._stopping:  # stop() shuts the read side down on purpose
                    log.warning(
                        "router_read_failed", extra={"router": conn.router_ip, "error": str(error)}
                    )
                return
            if not data:
                return
            try:
                events = session.feed(data)
            except FramingError as error:
                self._framing_error(conn, error, data)
                return
            if events:
                self._dispatch(conn, events)
            # A gevent socket with data waiting returns from recv() without
            # switching, and a put into a queue with room does not switch
            # either: without this, one busy router could be read for as long
            # as the queue has space while the others wait.  Not sleep(0):
            # that runs the greenlets already scheduled but may resume this
            # one before the loop polls the sockets, so routers whose data
            # arrived since the last poll wait (measured: one router read 30
            # times before the other 19 were read once).  A positive sleep
            # resumes after the next poll.
            gevent.sleep(_YIELD)
            if session.error is not None:
                self._framing_error(conn, session.error, data)
                return

    def _close(self, conn: RouterConnection) -> None:
        self.connections.discard(conn)
        buffered = conn.session.buffered
        if buffered:
            log.warning(
                "partial_message_dropped", extra={"router": conn.router_ip, "bytes": buffered}
            )
        self._live[conn.router_ip] -= 1
        if self._live[conn.router_ip] <= 0:
            del self._live[conn.router_ip]
            # Another connection of the same router keeps its routes fresh.
            self._announce(conn)
            self.store.router_disconnected(conn.router_ip, time.time())
        log.info(
            "router_disconnected",
            extra={
                "router": conn.router_ip,
                "sys_name": conn.session.sys_name,
                "messages": conn.messages,
                "routes": conn.routes,
                "errors": conn.errors,
                "connected_seconds": round(time.monotonic() - conn.connected_at, 3),
            },
        )

    def _dispatch(self, conn: RouterConnection, events: list) -> None:
        """Count, log and report the events of one read, then hand them to the store."""
        now = time.time()
        families = conn.families
        conn.messages += len(events)
        for event in events:
            kind = type(event)
            if kind is RouteMonitoring:
                update = event.update
                for route_set in update.announced:
                    families[route_set.afi_safi] += len(route_set.nlri)
                for route_set in update.withdrawn:
                    families[route_set.afi_safi] += len(route_set.nlri)
            elif kind is DecodeFailure:
                conn.messages -= 1
                self._content_error(conn, event)
            else:
                self._notable(conn, event)
        conn.routes = sum(families.values())
        self._hand_over(conn, events, now)

    def _announce(self, conn: RouterConnection) -> None:
        if not conn.announced:
            conn.announced = True
            self.store.router_connected(conn.router_ip, conn.connected_wall)

    def _hand_over(self, conn: RouterConnection, events: list, now: float) -> None:
        """Give *events* to the store (blocks while its queue is full: backpressure)."""
        self._announce(conn)
        self.store.submit(conn.router_ip, events, now)

    def _notable(self, conn: RouterConnection, event) -> None:
        kind = type(event)
        router_ip = conn.router_ip
        if kind is PeerUp:
            peer = event.peer
            log.info(
                "bmp_peer_up",
                extra={
                    "router": router_ip,
                    "peer": str(peer.address),
                    "asn": peer.asn,
                    "peer_bgp_id": str(peer.bgp_id),
                    "local_ip": str(event.local_address),
                    "local_port": event.local_port,
                    "remote_port": event.remote_port,
                },
            )
            sentry.capture_peer_up(router_ip, peer.address, peer.asn)
        elif kind is PeerDown:
            peer = event.peer
            extra = {
                "router": router_ip,
                "peer": str(peer.address),
                "asn": peer.asn,
                "reason_code": event.reason,
                "reason": name_of(PeerDownReason, event.reason),
            }
            if event.notification is not None:
                extra["notification_code"] = event.notification.code
                extra["notification_subcode"] = event.notification.subcode
            if event.fsm_event is not None:
                extra["fsm_event"] = event.fsm_event
            log.warning("bmp_peer_down", extra=extra)
            sentry.capture_peer_down(router_ip, event.reason)
        elif kind is Initiation:
            log.info(
                "router_initiation",
                extra={
                    "router": router_ip,
                    "sys_name": conn.session.sys_name,
                    "sys_descr": conn.session.sys_descr,
                },
            )
        elif kind is Termination:
            reason = None if event.reason is None else name_of(TerminationReason, event.reason)
            log.info("router_termination", extra={"router": router_ip, "reason": reason})
        elif kind is UnknownFamily:
            log.warning(
                "unknown_afi_safi",
                extra={
                    "router": router_ip,
                    "peer": str(event.peer.address),
                    "afi": event.afi,
                    "safi": event.safi,
                },
            )
        elif kind is StatisticsReport or kind is RouteMirroring:
            pass  # stored; nothing an operator needs in the log

    def _content_error(self, conn: RouterConnection, failure: DecodeFailure) -> None:
        """A message that did not decode: log with hex, report, keep it, go on."""
        conn.errors += 1
        error = failure.error
        kind = "bgp_parse_error" if isinstance(error, BgpError) else "bmp_parse_error"
        peer_ip = None if failure.peer is None else str(failure.peer.address)
        log.error(
            kind + ": %s",  # two stable templates, so Sentry groups each kind
            error,
            extra={
                "router": conn.router_ip,
                "peer": peer_ip,
                "error": str(error),
                "error_offset": error.offset,
                "stream_offset": failure.offset,
                "length": len(failure.raw),
                "hex": failure.raw[:HEX_DUMP_BYTES].hex(),
            },
        )
        sentry.capture_parse_error(kind, conn.router_ip, error.message, failure.raw, error)

    def _framing_error(self, conn: RouterConnection, error: FramingError, data: bytes) -> None:
        """The stream can no longer be trusted: log, report, and close it."""
        conn.errors += 1
        log.error(
            "bmp_parse_error: %s",
            error,
            extra={
                "router": conn.router_ip,
                "error": str(error),
                "stream_offset": error.offset,
                "hex": data[:HEX_DUMP_BYTES].hex(),
                "action": "connection_closed",
            },
        )
        sentry.capture_parse_error("bmp_parse_error", conn.router_ip, error.message, data, error)
        # Kept for support like any undecodable message: the bytes of the read
        # in which the stream broke.
        failure = DecodeFailure(error, data[:PARSE_ERROR_BYTES], error.offset, None)
        self._hand_over(conn, [failure], time.time())

    # --- periodic statistics -----------------------------------------------------------

    def _report_stats_forever(self) -> None:
        interval = self.settings.stats_interval
        while True:
            gevent.sleep(interval)
            for conn in list(self.connections):
                try:
                    self.report_stats(conn)
                except Exception:
                    log.exception("route_stats_failed", extra={"router": conn.router_ip})

    def report_stats(self, conn: RouterConnection) -> None:
        """One route_stats record for *conn* covering the time since the last one."""
        now = time.monotonic()
        elapsed = max(now - conn.reported_at, 1e-9)
        log.info(
            "route_stats",
            extra={
                "router": conn.router_ip,
                "sys_name": conn.session.sys_name,
                "messages": conn.messages,
                "routes": conn.routes,
                "errors": conn.errors,
                "families": dict(conn.families),
                "routes_per_second": round((conn.routes - conn.reported_routes) / elapsed, 1),
                "messages_per_second": round((conn.messages - conn.reported_messages) / elapsed, 1),
            },
        )
        conn.reported_at = now
        conn.reported_routes = conn.routes
        conn.reported_messages = conn.messages


def _router_ip(host: str) -> str:
    """The router's address as text; IPv4-mapped IPv6 (dual-stack listener) as IPv4."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _enable_keepalive(sock) -> None:
    """TCP keepalive, so a router that vanished without a FIN is noticed (~2 min)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _shutdown_read(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already closed by the router


def _hex_dump(conn: RouterConnection, raw: bytes) -> None:
    log.debug(
        "bmp_message",
        extra={
            "router": conn.router_ip,
            "message_type": raw[5] if len(raw) > 5 else None,
            "length": len(raw),
            "hex": raw[:HEX_DUMP_BYTES].hex(),
        },
    )
