"""Send a recorded raw BMP stream to a station, as a router would.

For testing a station and for support: an operator who captured what a
router sent can play it again against a test instance.  The stream is cut
into whole messages (RFC 7854 §4.1) so that ``rate`` paces messages, not
bytes; without a rate it is sent as fast as the station reads it.
"""

from __future__ import annotations

import socket
import time
from typing import BinaryIO, Optional

from pybmpmon.bmp.framer import DEFAULT_MAX_MESSAGE_SIZE, Framer

READ_SIZE = 256 * 1024


class ReplayError(Exception):
    """The target cannot be parsed or reached, or the stream is not BMP."""


def parse_target(text: str) -> tuple:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplayError(f"target {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def replay(
    stream: BinaryIO,
    target: str,
    rate: Optional[float] = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    source: Optional[str] = None,
) -> tuple:
    """Send *stream* to *target*; return (messages, bytes) sent.

    With *rate*, at most that many messages per second.  With *source*, the
    connection leaves from that local address: a station tells routers apart
    by their address, so one machine can pose as several routers
    (127.0.0.11, 127.0.0.12, ... on loopback).  A stream that is not BMP
    raises :class:`ReplayError` (after sending the messages before it).
    """
    host, port = parse_target(target)
    source_address = None if source is None else (source, 0)
    try:
        sock = socket.create_connection((host, port), timeout=30, source_address=source_address)
    except OSError as error:
        via = "" if source is None else f" from {source}"
        raise ReplayError(f"cannot connect to {host}:{port}{via}: {error}") from None
    framer = Framer(max_message_size)
    messages = sent = 0
    started = time.monotonic()
    try:
        with sock:
            sock.settimeout(None)
            while True:
                chunk = stream.read(READ_SIZE)
                if not chunk:
                    break
                try:
                    batch = framer.feed(chunk)
                except Exception as error:
                    raise ReplayError(f"not a BMP stream: {error}") from None
                if rate is None:
                    data = b"".join(batch)
                    sock.sendall(data)
                    sent += len(data)
                    messages += len(batch)
                else:
                    for message in batch:
                        due = started + messages / rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        sock.sendall(message)
                        sent += len(message)
                        messages += 1
                if framer.error is not None:
                    raise ReplayError(f"not a BMP stream: {framer.error}")
            if framer.buffered:
                raise ReplayError(
                    f"the stream ends inside a message ({framer.buffered} bytes left)"
                )
            sock.shutdown(socket.SHUT_WR)
    except OSError as error:
        raise ReplayError(f"sending to {host}:{port} failed: {error}") from None
    return messages, sent
