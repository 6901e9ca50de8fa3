"""The decoding error tree.

Strategy: two kinds of failure need two reactions.  A :class:`FramingError` means
the byte stream itself can no longer be trusted (the BMP common header is wrong),
so the connection must be closed.  A :class:`ContentError` means one well-framed
message could not be decoded; that message is skipped and the stream goes on.
Every error carries the offset, counted from the start of the buffer that the
failing decoder was given, where the problem was found.
"""


class DecodeError(Exception):
    """Base of every error raised by the codec modules."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return f"{self.message} (offset {self.offset})"


class FramingError(DecodeError):
    """The BMP common header is invalid: version, type-independent length."""


class ContentError(DecodeError):
    """A framed BMP message (or the BGP message inside it) is malformed."""


class BgpError(ContentError):
    """A malformed BGP message, with the NOTIFICATION (code, subcode) it maps to.

    RFC 4271 §6 names the error a speaker would send; a monitoring station never
    sends one, but the pair tells an operator precisely what was wrong.
    """

    def __init__(self, message: str, offset: int = 0, code: int = 3, subcode: int = 0):
        super().__init__(message, offset)
        self.code = code
        self.subcode = subcode
