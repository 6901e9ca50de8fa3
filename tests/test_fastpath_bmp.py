"""The C accelerator's whole Route Monitoring path (route_monitoring() in
pybmpmon/_fastpath.c) against decode_bmp's Python code.

For a well-formed Route Monitoring message of a peer in the session's peer
cache, the C function must return exactly what decode_bmp's own code returns
(the UPDATE itself is test_fastpath.py's subject); for anything else, None,
touching nothing.  Checked on every message of the corpus captures and of
synthetic tables, on mutated messages, and on odd arguments; then for leaks.

With PYBMPMON_REQUIRE_FASTPATH=1 (set in CI) a missing extension fails the
suite instead of skipping these tests.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import struct
from pathlib import Path

import pytest
from accel import assert_no_leaks, synth

from pybmpmon.bgp import message
from pybmpmon.bgp.model import BgpContext
from pybmpmon.bmp import decode
from pybmpmon.bmp.framer import Framer
from pybmpmon.bmp.model import RouteMonitoring
from pybmpmon.errors import DecodeError
from pybmpmon.session import RouterSession

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
CAPTURES = sorted(CORPUS.glob("*.bmp"))
REQUIRED = os.environ.get("PYBMPMON_REQUIRE_FASTPATH", "") not in ("", "0")
MUTATIONS = int(os.environ.get("PYBMPMON_FASTPATH_MUTATIONS", "100000")) // 4

try:
    _fastpath = importlib.import_module("pybmpmon._fastpath")
except ImportError:
    _fastpath = None
FAST = decode._fast_route_monitoring
needs_fast = pytest.mark.skipif(FAST is None, reason="the C Route Monitoring path is not in use")


def test_the_route_monitoring_path_is_used():
    if FAST is None:
        if REQUIRED:
            pytest.fail("pybmpmon._fastpath's route_monitoring is not in use "
                        "(PYBMPMON_REQUIRE_FASTPATH=1)")
        pytest.skip("pybmpmon._fastpath is not built or turned off")
    assert message.FASTPATH and FAST is _fastpath.route_monitoring
    # The session really goes through C: only C leaves the message untracked
    # by the cyclic GC; the peer's first message (not cached yet) is Python's.
    stream = synth().generate(v4=50, v6=0, seed=1, peers=1)
    routes = [e for e in RouterSession().feed(stream) if type(e) is RouteMonitoring]
    assert gc.is_tracked(routes[0]) and not gc.is_tracked(routes[1])


# -- whole streams, with and without C ----------------------------------------------

def _events(data: bytes, fast, monkeypatch, chunk: int = 4096) -> list:
    monkeypatch.setattr(decode, "_fast_route_monitoring", fast)
    session = RouterSession()
    events = []
    for i in range(0, len(data), chunk):
        events += session.feed(data[i:i + chunk])
    return events


def _assert_same_events(data: bytes, monkeypatch) -> int:
    """Decode ``data`` with and without C; return how many messages C decoded."""
    taken = []

    def counting(msg, peer_cache):
        found = FAST(msg, peer_cache)
        taken.append(found is not None)
        return found

    with_c = _events(data, counting, monkeypatch)
    python = _events(data, None, monkeypatch)
    assert len(with_c) == len(python)
    for fast_event, event in zip(with_c, python):
        assert type(fast_event) is type(event)
        if type(event) is RouteMonitoring:
            assert fast_event == event
            assert type(fast_event.peer) is type(event.peer)
            assert [type(x) for x in fast_event.peer] == [type(x) for x in event.peer]
        else:
            assert repr(fast_event) == repr(event)
    return sum(taken)


@needs_fast
@pytest.mark.skipif(not CAPTURES, reason=f"no captures in {CORPUS}")
@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_corpus_captures_decode_identically(capture, monkeypatch):
    data = capture.read_bytes()
    taken = _assert_same_events(data, monkeypatch)
    routes = sum(1 for raw in Framer().feed(data) if raw[5] == 0)
    if routes >= 20:
        assert taken >= routes // 3, f"C decoded only {taken} of {routes}"


@needs_fast
@pytest.mark.parametrize("seed,peers", [(1, 1), (2, 3)])
def test_synthetic_tables_decode_identically(seed, peers, monkeypatch):
    data = synth().generate(v4=3000, v6=800, seed=seed, peers=peers)
    taken = _assert_same_events(data, monkeypatch)
    routes = sum(1 for raw in Framer().feed(data) if raw[5] == 0)
    # All but each peer's first message and the IPv6 End-of-RIB markers.
    assert taken >= routes - 2 * peers - 1


# -- mutated messages ----------------------------------------------------------------

def _mutate(rng: random.Random, msg: bytes) -> bytes:
    buf = bytearray(msg)
    op = rng.random()
    if op < 0.15:
        del buf[rng.randrange(len(buf)):]
    elif op < 0.4:
        for _ in range(rng.choice((1, 1, 2, 4))):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif op < 0.7:  # a length field: BMP (1, 4 octets), BGP (64, 2), withdrawn, attributes
        offset, size = rng.choice(((1, 4), (64, 2), (67, 2)))
        old = int.from_bytes(buf[offset:offset + size], "big")
        new = rng.choice((old + 1, old - 1, old + rng.randint(2, 40), 0, 2 ** (8 * size) - 1))
        buf[offset:offset + size] = (new % 2 ** (8 * size)).to_bytes(size, "big")
    elif op < 0.85:  # the common, per-peer or BGP header
        buf[rng.randrange(67)] = rng.choice((0, 0xFF, 1, 2, 3, rng.getrandbits(8)))
    else:
        at = rng.randrange(len(buf) + 1)
        if rng.random() < 0.5:
            buf[at:at] = bytes((rng.getrandbits(8),))
        else:
            del buf[at:at + 1]
    return bytes(buf)


@needs_fast
def test_mutated_messages(monkeypatch):
    """When C returns a message, decode_bmp's Python code returns the same;
    when that code raises, C returned None.  The peer cache is a session's,
    primed by the stream the messages come from."""
    data = synth().generate(v4=1500, v6=500, seed=4, peers=2)
    data += b"".join(p.read_bytes() for p in CAPTURES)
    session = RouterSession()
    session.feed(data)
    seeds = [raw for raw in Framer().feed(data) if raw[5] == 0]
    peer_cache = session._peer_cache
    monkeypatch.setattr(decode, "_fast_route_monitoring", None)
    rng = random.Random(7854)
    handled = 0
    for _ in range(MUTATIONS):
        msg = _mutate(rng, rng.choice(seeds))
        fast = FAST(msg, peer_cache)
        try:
            python = decode.decode_bmp(msg, session._context_for, peer_cache)
        except DecodeError:
            assert fast is None
            continue
        if fast is not None:
            handled += 1
            assert fast == python
    assert handled > MUTATIONS // 10  # the mutations still reach the C path


# -- odd arguments and reference counting --------------------------------------------

@needs_fast
def test_odd_arguments_are_declined():
    stream = synth().generate(v4=20, v6=0, seed=2, peers=1)
    session = RouterSession()
    session.feed(stream)
    msg = [raw for raw in Framer().feed(stream) if raw[5] == 0][5]  # an announcement
    cache = session._peer_cache
    key = msg[6:40]
    assert type(FAST(msg, cache)) is RouteMonitoring
    fields, ctx = cache[key]
    for odd_cache in ({}, {key: (fields,)}, {key: [fields, ctx]}, {key: (fields[:5], ctx)},
                      {key: (fields, object())}, {key: (fields, BgpContext(cache=[]))}):
        assert FAST(msg, odd_cache) is None
    assert FAST(bytearray(msg), cache) is None
    assert FAST(msg, list(cache.items())) is None
    assert FAST(msg[:-1], cache) is None
    assert FAST(msg[:66], cache) is None
    assert FAST(struct.pack(">BIB", 3, 6, 4), cache) is None  # an Initiation
    with pytest.raises(TypeError):
        FAST(msg)


@needs_fast
def test_no_leaks():
    data = synth().generate(v4=2000, v6=500, seed=5, peers=2)
    session = RouterSession()
    session.feed(data)
    rng = random.Random(5)
    msgs = [raw for raw in Framer().feed(data) if raw[5] == 0]
    msgs += [_mutate(rng, m) for m in msgs[:1000]]
    cache = session._peer_cache
    watched = [None, True, False, *(x for fields, ctx in cache.values() for x in (*fields, ctx))]

    def run():
        for ctx in {id(c): c for _f, c in cache.values()}.values():
            ctx.cache.clear()
        for msg in msgs:
            FAST(msg, cache)

    assert_no_leaks(run, watched)
