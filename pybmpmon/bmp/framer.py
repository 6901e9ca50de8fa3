"""Cutting a BMP byte stream into whole messages (RFC 7854 §4.1).

The common header is version (1 byte, must be 3), message length (4 bytes,
including the header) and type (1 byte).  The framer checks only what the
stream's integrity depends on: the version and a length between the header
size and the configured maximum.  The message type and the body are the
decoder's business; an unknown type does not desynchronise the stream.
"""

from __future__ import annotations

import struct

from pybmpmon.errors import FramingError

HEADER_SIZE = 6
BMP_VERSION = 3
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_HEADER = struct.Struct(">BI").unpack_from


class Framer:
    """Accumulates stream bytes and hands back each complete BMP message.

    Strategy: when nothing is buffered (the common case: a socket read ends on
    a message boundary more often than not) the messages are sliced straight
    out of the incoming ``bytes``, and only the incomplete tail is copied into
    the buffer.  All complete messages of one read are cut in a single loop.

    After a framing error the stream is unusable: every later :meth:`feed`
    raises the same error.  Messages that were complete before the bad header
    in the same read are still returned, and the error is raised by the next
    call (it is also available at once as :attr:`error`).
    """

    __slots__ = ("max_message_size", "_buffer", "_consumed", "error")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        if max_message_size < HEADER_SIZE:
            raise ValueError(f"max_message_size must be at least {HEADER_SIZE}")
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of the buffer's first byte
        self.error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message waiting for the rest."""
        return len(self._buffer)

    def feed(self, data) -> list:
        """Add *data* (bytes-like) to the stream; return the whole messages now complete."""
        if self.error is not None:
            raise self.error
        buffer = self._buffer
        if buffer or type(data) is not bytes:
            buffer += data
            if len(buffer) >= HEADER_SIZE:
                # A large message arriving in many reads must not be copied
                # out of the buffer on each of them.
                version, length = _HEADER(buffer, 0)
                if version == BMP_VERSION and len(buffer) < length <= self.max_message_size:
                    return []
            else:
                return []
            source = bytes(buffer)
            buffer.clear()
        else:
            source = data
        size = len(source)
        max_size = self.max_message_size
        messages = []
        append = messages.append
        pos = 0
        while size - pos >= HEADER_SIZE:
            version, length = _HEADER(source, pos)
            if version != BMP_VERSION or length < HEADER_SIZE or length > max_size:
                self.error = self._framing_error(version, length, self._consumed + pos)
                break
            end = pos + length
            if end > size:
                break
            append(source[pos:end])
            pos = end
        self._consumed += pos
        if pos < size:
            buffer += source[pos:] if pos else source
        if self.error is not None and not messages:
            raise self.error
        return messages

    def _framing_error(self, version: int, length: int, offset: int) -> FramingError:
        if version != BMP_VERSION:
            return FramingError(f"BMP version {version}, expected {BMP_VERSION}", offset)
        if length < HEADER_SIZE:
            return FramingError(f"BMP message length {length} is below the header size", offset + 1)
        return FramingError(
            f"BMP message length {length} exceeds the maximum of {self.max_message_size}",
            offset + 1,
        )
