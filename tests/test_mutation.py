"""Robustness: mutated corpus messages raise nothing but the codec's own errors.

A seeded mutator takes the real messages of ../shared/corpus and truncates
them, flips bits, inserts and deletes bytes, changes per-peer header flags
(V changes the address width, A the AS_PATH width) and, above all, lies in
length fields: the BMP common header, BGP message header, UPDATE withdrawn and
attribute lengths, each path attribute, MP_REACH next hop, NLRI prefix and
EVPN route lengths, OPEN optional parameters and capabilities, and every TLV
length.  Each mutated message goes through a
:class:`~pybmpmon.session.RouterSession` that has seen the capture's Peer Ups,
so per-peer state is in play.  Allowed outcomes: decoded messages,
:class:`DecodeFailure` events carrying a ContentError, or a FramingError out
of ``feed``.  Any other exception, or a stall, fails the test with what is
needed to reproduce it.  Decoded results are also rendered to JSON (a sample),
so odd but valid values cannot crash ``pybmpmon decode``.

``PYBMPMON_MUTATIONS`` and ``PYBMPMON_MUTATION_SEED`` run a longer soak or
another seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest

from pybmpmon.bmp.framer import Framer
from pybmpmon.errors import ContentError, DecodeError, FramingError
from pybmpmon.render import BMP_TYPE_NAMES, render_message
from pybmpmon.session import DecodeFailure, RouterSession

CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
MUTATIONS = int(os.environ.get("PYBMPMON_MUTATIONS", "200000"))
SEED = int(os.environ.get("PYBMPMON_MUTATION_SEED", "7911"))
TIME_LIMIT = max(300.0, MUTATIONS / 1000)  # a hang guard, far above the expected run time
SLOW_MESSAGE = 1.0  # seconds for one message: quadratic behaviour, not a machine hiccup
RENDER_EVERY = 16

_u16 = lambda data, at: (data[at] << 8) | data[at + 1]  # noqa: E731


# -- where the length fields are (an independent, forgiving walk of valid messages) -------


def _nlri_lengths(data: bytes, pos: int, end: int, afi: int, safi: int, fields: list) -> None:
    """Prefix-length octets of unicast NLRI, route-length octets of EVPN NLRI."""
    while pos < end:
        if (afi, safi) == (25, 70):
            if pos + 2 > end:
                return
            fields.append((pos + 1, 1))
            pos += 2 + data[pos + 1]
        else:
            # Labels and RD (SAFI 4, 128) are counted in the prefix length too.
            fields.append((pos, 1))
            pos += 1 + (data[pos] + 7) // 8


def _bgp_fields(data: bytes, start: int, fields: list) -> None:
    """Length fields of the BGP message at *start* (RFC 4271 §4)."""
    if start + 19 > len(data):
        return
    fields.append((start + 16, 2))
    end = min(len(data), start + _u16(data, start + 16))
    kind = data[start + 18]
    body = start + 19
    if kind == 1 and body + 10 <= end:  # OPEN: optional parameters, then capabilities
        fields.append((body + 9, 1))
        pos = body + 10
        while pos + 2 <= end:
            fields.append((pos + 1, 1))
            if data[pos] == 2:
                cap = pos + 2
                while cap + 2 <= min(end, pos + 2 + data[pos + 1]):
                    fields.append((cap + 1, 1))
                    cap += 2 + data[cap + 1]
            pos += 2 + data[pos + 1]
    elif kind == 2 and body + 4 <= end:  # UPDATE
        fields.append((body, 2))
        withdrawn_end = body + 2 + _u16(data, body)
        _nlri_lengths(data, body + 2, min(withdrawn_end, end), 1, 1, fields)
        if withdrawn_end + 2 > end:
            return
        fields.append((withdrawn_end, 2))
        pos = withdrawn_end + 2
        attrs_end = min(end, pos + _u16(data, withdrawn_end))
        while pos + 3 <= attrs_end:
            flags, code = data[pos], data[pos + 1]
            width = 2 if flags & 0x10 else 1
            fields.append((pos + 2, width))
            value = pos + 2 + width
            value_end = value + (_u16(data, pos + 2) if width == 2 else data[pos + 2])
            if code == 14 and value + 4 <= attrs_end:
                afi, safi = _u16(data, value), data[value + 2]
                fields.append((value + 3, 1))
                nlri = value + 4 + data[value + 3] + 1
                _nlri_lengths(data, nlri, min(value_end, attrs_end), afi, safi, fields)
            elif code == 15 and value + 3 <= attrs_end:
                _nlri_lengths(
                    data,
                    value + 3,
                    min(value_end, attrs_end),
                    _u16(data, value),
                    data[value + 2],
                    fields,
                )
            pos = value_end
        _nlri_lengths(data, attrs_end, end, 1, 1, fields)


def _tlv_fields(data: bytes, pos: int, fields: list, bgp_in_type0: bool = False) -> None:
    """2-octet type, 2-octet length TLVs (RFC 7854 §4.4, §4.5, §4.7)."""
    while pos + 4 <= len(data):
        fields.append((pos + 2, 2))
        if bgp_in_type0 and _u16(data, pos) == 0:
            _bgp_fields(data, pos + 4, fields)
        pos += 4 + _u16(data, pos + 2)


def length_fields(msg: bytes) -> list:
    """(offset, width) of every length field in one valid BMP message."""
    fields = [(1, 4)]
    kind = msg[5]
    if kind == 0:
        _bgp_fields(msg, 48, fields)
    elif kind == 1 and len(msg) >= 52:  # statistics: count, then type/length/value
        fields.append((48, 4))
        pos = 52
        while pos + 4 <= len(msg):
            fields.append((pos + 2, 2))
            pos += 4 + _u16(msg, pos + 2)
    elif kind == 2 and len(msg) > 49 and msg[48] in (1, 3):
        _bgp_fields(msg, 49, fields)
    elif kind == 3 and len(msg) >= 68 + 19:
        _bgp_fields(msg, 68, fields)
        received = 68 + _u16(msg, 68 + 16)
        _bgp_fields(msg, received, fields)
        if received + 19 <= len(msg):
            _tlv_fields(msg, received + _u16(msg, received + 16), fields)
    elif kind in (4, 5):
        _tlv_fields(msg, 6, fields)
    elif kind == 6:
        _tlv_fields(msg, 48, fields, bgp_in_type0=True)
    return [(at, width) for at, width in fields if at + width <= len(msg)]


# -- the mutator -------------------------------------------------------------------------


def _with_length(data: bytearray) -> bytes:
    """Make the BMP common header's length true again after a content mutation."""
    if len(data) >= 6:
        data[1:5] = len(data).to_bytes(4, "big")
    return bytes(data)


def _lie(rng: random.Random, value: int, width: int) -> int:
    top = (1 << (8 * width)) - 1
    choice = rng.randrange(7)
    if choice == 0:
        return 0
    if choice == 1:
        return top
    if choice == 2:
        return min(top, value + rng.randint(1, 4))
    if choice == 3:
        return max(0, value - rng.randint(1, 4))
    if choice == 4:
        return min(top, value * 2 + 1)
    if choice == 5:
        return rng.randint(0, min(top, 300))
    return rng.randint(0, top)


def mutate(rng: random.Random, msg: bytes, fields: list) -> tuple:
    """(mutation name, mutated message)."""
    data = bytearray(msg)
    roll = rng.random()
    if roll < 0.45:
        at, width = rng.choice(fields)
        value = int.from_bytes(data[at : at + width], "big")
        data[at : at + width] = _lie(rng, value, width).to_bytes(width, "big")
        if at == 1:
            return "lie in the BMP length", bytes(data)
        return f"lie in the length at {at}", _with_length(data)
    if roll < 0.70:
        flips = rng.randint(1, 3)
        for _ in range(flips):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return f"{flips} bit flips", bytes(data)
    if roll < 0.82:
        cut = rng.randrange(len(data))
        if rng.random() < 0.8:
            return f"truncated to {cut}", _with_length(data[:cut])
        return f"truncated to {cut}, length kept", bytes(data[:cut])
    if roll < 0.92 and len(data) >= 48 and data[5] in (0, 1, 2, 3, 6):
        if rng.random() < 0.7:
            data[7] ^= rng.choice((0x80, 0x40, 0x20, 0x10, 0xA0))  # V, L, A, O flags
        else:
            data[6] = rng.choice((0, 1, 2, 3, 4, 255))  # peer type
        return "per-peer header", bytes(data)
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return f"bytes inserted at {at}", _with_length(data)
    del data[at : at + rng.randint(1, 8)]
    return f"bytes deleted at {at}", _with_length(data)


# -- running them ----------------------------------------------------------------------------


class Stalled(Exception):
    pass


def _captures() -> list:
    paths = sorted(CORPUS.glob("*.bmp"))
    assert paths, f"no captures in {CORPUS}"
    captures = []
    for path in paths:
        messages = Framer().feed(path.read_bytes())
        # What a session must have seen for the routes to decode as in the capture.
        priming = [m for m in messages if m[5] in (3, 4)]
        captures.append((path.name, messages, priming, [length_fields(m) for m in messages]))
    return captures


def _primed(priming: list) -> RouterSession:
    session = RouterSession()
    for msg in priming:
        session.feed(msg)
    return session


def _check(events: list) -> list:
    """The decoded messages among *events*; any malformed event is a failure."""
    decoded = []
    for event in events:
        if type(event) is DecodeFailure:
            if not isinstance(event.error, ContentError):
                raise AssertionError(f"DecodeFailure carries {type(event.error).__name__}: {event.error}")
        elif type(event) in BMP_TYPE_NAMES:
            decoded.append(event)
        # else: a session note, such as the first UPDATE of an unknown family
    return decoded


def test_length_fields_are_found():
    """The locator finds the length fields the mutator lies in (or the test would be weaker than it says)."""
    counts = {}
    for _name, messages, _priming, fields in _captures():
        for msg, found in zip(messages, fields):
            counts[msg[5]] = counts.get(msg[5], 0) + len(found)
            for at, width in found:
                assert 0 < at and at + width <= len(msg)
    # Route monitoring: BMP, BGP, withdrawn, attribute total, each attribute, NLRI...
    assert counts[0] > 10 * 2000
    assert counts[3] > 4 * 20  # Peer Up: both OPENs, their parameters and capabilities
    assert all(kind in counts for kind in (0, 1, 3, 4))


@pytest.mark.slow
def test_mutated_messages_raise_only_codec_errors():
    captures = _captures()
    rng = random.Random(SEED)
    failures: dict = {}
    outcomes = {"decoded": 0, "content_error": 0, "framing_error": 0, "incomplete": 0}
    sessions = {name: _primed(priming) for name, _m, priming, _f in captures}
    rendered = 0
    current = ["nothing yet"]

    def on_alarm(signum, frame):
        raise Stalled(f"stalled on {current[0]}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    started = time.perf_counter()
    try:
        for count in range(MUTATIONS):
            name, messages, priming, fields = captures[rng.randrange(len(captures))]
            index = rng.randrange(len(messages))
            kind, mutated = mutate(rng, messages[index], fields[index])
            current[0] = f"seed {SEED} mutation {count}: {name} message {index}, {kind}: {mutated.hex()}"
            framed = len(mutated) >= 6 and mutated[0] == 3 and int.from_bytes(mutated[1:5], "big") == len(mutated)
            session = sessions[name] if framed else RouterSession()
            before = time.perf_counter()
            try:
                events = session.feed(mutated)
                decoded = _check(events)
                if decoded:
                    outcomes["decoded"] += 1
                    if count % RENDER_EVERY == 0:
                        for msg in decoded:
                            json.dumps(render_message(msg))
                            rendered += 1
                elif events:
                    outcomes["content_error"] += 1
                else:
                    outcomes["incomplete"] += 1
            except FramingError:
                outcomes["framing_error"] += 1
                if framed:
                    sessions[name] = _primed(priming)
            except Stalled:
                raise
            except Exception as error:  # noqa: BLE001 - the point of the test
                if isinstance(error, DecodeError):
                    where = "a DecodeError escaped feed() instead of becoming a DecodeFailure"
                else:
                    where = "".join(traceback.format_exception(error)[-3:]).strip()
                key = (type(error).__name__, where.splitlines()[-2] if "\n" in where else where)
                failures.setdefault(key, (current[0], where))
                if framed:
                    sessions[name] = _primed(priming)
            took = time.perf_counter() - before
            assert took < SLOW_MESSAGE, f"{took:.2f} s for one message: {current[0]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - started

    report = "\n\n".join(f"{key[0]} after {case}\n{where}" for key, (case, where) in list(failures.items())[:10])
    assert not failures, f"{len(failures)} kinds of unexpected exception:\n\n{report}"
    assert sum(outcomes.values()) == MUTATIONS
    # Every outcome must actually occur, or the mutator is not doing its job.
    assert all(outcomes.values()), outcomes
    assert outcomes["content_error"] > MUTATIONS // 10, outcomes
    assert rendered > 0
    print(f"{MUTATIONS} mutated messages in {elapsed:.1f} s: {outcomes}")


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bmp")), ids=lambda p: p.stem)
def test_session_events_do_not_depend_on_split_points(path):
    stream = path.read_bytes()
    whole = RouterSession().feed(stream)
    assert whole and not any(type(e) is DecodeFailure for e in whole)
    rng = random.Random(path.name)
    for _ in range(3):
        session = RouterSession()
        events = []
        pos = 0
        while pos < len(stream):
            step = rng.choice((1, 2, 5, 6, 7, 48, 100, 1000, 4096))
            events.extend(session.feed(stream[pos : pos + step]))
            pos += step
        assert session.buffered == 0
        assert events == whole
