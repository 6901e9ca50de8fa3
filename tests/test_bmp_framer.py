"""BMP stream framing (pybmpmon.bmp.framer): split points, real captures, errors."""

import json
import random
import struct
from pathlib import Path

import pytest

from pybmpmon.bmp.framer import Framer
from pybmpmon.errors import FramingError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CAPTURES = sorted(CORPUS.glob("*.bmp"))


def message(msg_type: int, body: bytes = b"", version: int = 3) -> bytes:
    return struct.pack(">BIB", version, 6 + len(body), msg_type) + body


def header(length: int, version: int = 3, msg_type: int = 4) -> bytes:
    return struct.pack(">BIB", version, length, msg_type)


def feed_chunks(framer: Framer, stream: bytes, cuts) -> list:
    out = []
    pos = 0
    for cut in list(cuts) + [len(stream)]:
        out.extend(framer.feed(stream[pos:cut]))
        pos = cut
    return out


def reference_split(stream: bytes) -> list:
    """The messages of *stream*, cut by walking the length fields independently."""
    out = []
    pos = 0
    while pos < len(stream):
        (length,) = struct.unpack_from(">I", stream, pos + 1)
        out.append(stream[pos : pos + length])
        pos += length
    return out


# --- basic behaviour ---------------------------------------------------------------

MESSAGES = [
    message(4, b"\x00\x02\x00\x03abc"),
    message(5),
    message(0, bytes(range(200))),
    message(1, b"\x00" * 46),
]
STREAM = b"".join(MESSAGES)


def test_whole_stream_in_one_read():
    framer = Framer()
    got = framer.feed(STREAM)
    assert got == MESSAGES
    assert all(type(m) is bytes for m in got)
    assert framer.buffered == 0


def test_empty_reads():
    framer = Framer()
    assert framer.feed(b"") == []
    assert framer.feed(STREAM[:3]) == []
    assert framer.feed(b"") == []
    assert framer.buffered == 3
    assert framer.feed(STREAM[3:]) == MESSAGES


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_two_way_split(cut):
    framer = Framer()
    assert feed_chunks(framer, STREAM, [cut]) == MESSAGES
    assert framer.buffered == 0


def test_byte_by_byte():
    framer = Framer()
    got = []
    for i in range(len(STREAM)):
        got.extend(framer.feed(STREAM[i : i + 1]))
    assert got == MESSAGES
    assert framer.buffered == 0


def test_messages_appear_as_soon_as_complete():
    framer = Framer()
    boundaries = []
    pos = 0
    for m in MESSAGES:
        pos += len(m)
        boundaries.append(pos)
    for i in range(len(STREAM)):
        got = framer.feed(STREAM[i : i + 1])
        if i + 1 in boundaries:
            assert got == [MESSAGES[boundaries.index(i + 1)]]
        else:
            assert got == []
            assert framer.buffered > 0


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_other_bytes_like_inputs(kind):
    framer = Framer()
    got = framer.feed(kind(STREAM[:10])) + framer.feed(kind(STREAM[10:]))
    assert got == MESSAGES
    assert all(type(m) is bytes for m in got)


def test_buffered_counts_the_incomplete_tail():
    framer = Framer()
    assert framer.feed(MESSAGES[0] + MESSAGES[2][:50]) == [MESSAGES[0]]
    assert framer.buffered == 50


def test_large_message_in_many_small_reads():
    big = message(0, bytes(1_000_000))
    framer = Framer()
    got = []
    for pos in range(0, len(big), 1000):
        got.extend(framer.feed(big[pos : pos + 1000]))
    assert got == [big]


def test_message_of_exactly_the_maximum_size():
    framer = Framer(max_message_size=100)
    m = message(0, bytes(94))
    assert framer.feed(m) == [m]


def test_header_only_message():
    assert Framer().feed(message(5)) == [message(5)]


# --- real captures --------------------------------------------------------------------


def test_corpus_present():
    assert len(CAPTURES) >= 7


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_capture_whole_and_split(path):
    stream = path.read_bytes()
    manifest = json.loads(path.with_suffix(".json").read_text())
    summary = next(s for s in manifest["bmp_summary"] if s["file"] == path.name)
    expected = reference_split(stream)
    assert len(expected) == summary["messages_total"]

    framer = Framer()
    whole = framer.feed(stream)
    assert whole == expected
    assert framer.buffered == summary["trailing_bytes"] == 0

    rng = random.Random(path.name)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(stream)), k=min(200, len(stream) - 1)))
        assert feed_chunks(Framer(), stream, cuts) == expected

    # Awkward places: inside each header, one byte before and after each boundary.
    starts = []
    pos = 0
    for m in expected:
        starts.append(pos)
        pos += len(m)
    for delta in (1, 2, 5, 6, -1):
        cuts = sorted({s + delta for s in starts if 0 < s + delta < len(stream)})
        assert feed_chunks(Framer(), stream, cuts) == expected

    # Fixed read sizes, like a socket.
    for size in (7, 4096, 65536):
        assert feed_chunks(Framer(), stream, range(size, len(stream), size)) == expected


@pytest.mark.parametrize(
    "path", [p for p in CAPTURES if p.stat().st_size < 10000], ids=lambda p: p.name
)
def test_small_capture_byte_by_byte(path):
    stream = path.read_bytes()
    framer = Framer()
    got = []
    for i in range(len(stream)):
        got.extend(framer.feed(stream[i : i + 1]))
    assert got == reference_split(stream)
    assert framer.buffered == 0


# --- framing errors --------------------------------------------------------------------

ERROR_TABLE = [
    # (stream, max size, error offset in the stream, message text fragment)
    (header(6, version=1), None, 0, "version 1"),
    (header(6, version=4), None, 0, "version 4"),
    (header(6, version=0), None, 0, "version 0"),
    (header(5), None, 1, "below the header size"),
    (header(0), None, 1, "below the header size"),
    (header(101), 100, 1, "exceeds the maximum of 100"),
    (header(0xFFFFFFFF), None, 1, "exceeds the maximum"),
    (b"GET / HTTP/1.1\r\n", None, 0, "version 71"),
]


@pytest.mark.parametrize("stream, max_size, offset, text", ERROR_TABLE)
def test_framing_error_at_stream_start(stream, max_size, offset, text):
    framer = Framer() if max_size is None else Framer(max_message_size=max_size)
    with pytest.raises(FramingError) as info:
        framer.feed(stream)
    assert info.value.offset == offset
    assert text in info.value.message


@pytest.mark.parametrize("stream, max_size, offset, text", ERROR_TABLE)
def test_framing_error_after_good_messages_split_anywhere(stream, max_size, offset, text):
    prefix = MESSAGES[0] + MESSAGES[1]
    full = prefix + stream
    for cut in range(1, len(full)):
        framer = Framer() if max_size is None else Framer(max_message_size=max_size)
        got = []
        error = None
        try:
            got.extend(framer.feed(full[:cut]))
            got.extend(framer.feed(full[cut:]))
            got.extend(framer.feed(b""))
        except FramingError as exc:
            error = exc
        assert got == [MESSAGES[0], MESSAGES[1]]
        assert error is not None and error.offset == len(prefix) + offset
        assert framer.error is error


def test_messages_before_a_bad_header_in_the_same_read_are_returned_first():
    framer = Framer()
    assert framer.feed(MESSAGES[0] + header(3)) == [MESSAGES[0]]
    assert isinstance(framer.error, FramingError)
    with pytest.raises(FramingError) as info:
        framer.feed(b"")
    assert info.value.offset == len(MESSAGES[0]) + 1


def test_after_an_error_every_feed_raises():
    framer = Framer()
    with pytest.raises(FramingError) as first:
        framer.feed(header(6, version=2))
    for data in (b"", MESSAGES[0]):
        with pytest.raises(FramingError) as again:
            framer.feed(data)
        assert again.value is first.value


def test_error_offset_counts_the_whole_stream():
    framer = Framer()
    for m in MESSAGES:
        framer.feed(m)
    with pytest.raises(FramingError) as info:
        framer.feed(header(6, version=9))
    assert info.value.offset == len(STREAM)


def test_length_check_uses_the_configured_maximum():
    framer = Framer(max_message_size=64)
    assert framer.feed(message(0, bytes(58))) == [message(0, bytes(58))]
    with pytest.raises(FramingError):
        framer.feed(header(65))


def test_unknown_message_type_is_not_a_framing_error():
    assert Framer().feed(message(200, b"xyz")) == [message(200, b"xyz")]


def test_maximum_below_header_size_is_rejected():
    with pytest.raises(ValueError):
        Framer(max_message_size=5)
