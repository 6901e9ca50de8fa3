"""A bounds-checked reader over a byte buffer, for the cold decoding paths.

BMP TLVs, OPEN messages, statistics reports and peer up/down notifications are
decoded a handful of times per peer, so clarity beats speed there: every read
goes through :class:`Reader`, which checks the bounds first and raises
:class:`~pybmpmon.errors.ContentError` with the offset (counted from the start
of the buffer) instead of letting ``IndexError`` or ``struct.error`` escape.
The route paths (UPDATE attributes and NLRI) do not use it; they inline their
own checks.
"""

from __future__ import annotations

import struct

from pybmpmon.errors import ContentError

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from


class Reader:
    """Reads big-endian fields from ``data[start:end]``, never past ``end``.

    ``pos`` is an absolute index into ``data``, so error offsets and the
    offsets handed to other decoders need no translation.
    """

    __slots__ = ("data", "pos", "end")

    def __init__(self, data, start: int = 0, end: int | None = None):
        size = len(data)
        if end is None or end > size:
            end = size
        self.data = data
        self.pos = start
        self.end = end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def need(self, count: int, what: str) -> int:
        """Check that *count* bytes remain for *what*; return the current position."""
        pos = self.pos
        if count < 0 or pos + count > self.end:
            raise ContentError(
                f"truncated {what}: {count} bytes needed, {max(self.end - pos, 0)} left", pos
            )
        return pos

    def u8(self, what: str = "octet") -> int:
        pos = self.need(1, what)
        self.pos = pos + 1
        return self.data[pos]

    def u16(self, what: str = "16-bit field") -> int:
        pos = self.need(2, what)
        self.pos = pos + 2
        return _U16(self.data, pos)[0]

    def u32(self, what: str = "32-bit field") -> int:
        pos = self.need(4, what)
        self.pos = pos + 4
        return _U32(self.data, pos)[0]

    def u64(self, what: str = "64-bit field") -> int:
        pos = self.need(8, what)
        self.pos = pos + 8
        return _U64(self.data, pos)[0]

    def take(self, count: int, what: str = "field") -> bytes:
        """The next *count* bytes as ``bytes``."""
        pos = self.need(count, what)
        self.pos = pos + count
        return bytes(self.data[pos : pos + count])

    def skip(self, count: int, what: str = "field") -> int:
        """Advance past *count* bytes; return where they started."""
        pos = self.need(count, what)
        self.pos = pos + count
        return pos

    def sub(self, count: int, what: str = "field") -> "Reader":
        """A reader over the next *count* bytes (same buffer), advancing past them."""
        pos = self.need(count, what)
        self.pos = pos + count
        return Reader(self.data, pos, pos + count)

    def rest(self) -> bytes:
        """Everything up to ``end`` as ``bytes``; the reader is then at its end."""
        pos = self.pos
        self.pos = self.end
        return bytes(self.data[pos : self.end])
