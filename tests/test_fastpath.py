"""The optional C accelerator (pybmpmon/_fastpath.c) against the Python decoder.

``pybmpmon.bgp.message.decode_update_python`` is the reference.  The C
function must either return exactly what it returns (same NamedTuple types,
same values, the same enum member objects, the cached Attributes object
itself) and leave ``ctx.cache`` exactly as it would, or return None and touch
nothing.  Checked on:

- every UPDATE of the captures in ../shared/corpus and of bench/synth.py
  streams (several seeds and peer counts), each also replayed as if from a
  2-octet AS session, with the default and a tiny cache limit;
- seeded random UPDATEs from the builders below (every attribute the C code
  decodes, AS_SET and confederation segments, extended lengths, unknown and
  duplicate attributes, MP_REACH/MP_UNREACH of IPv4 and IPv6 with 4-, 16- and
  32-octet next hops, host bits, Add-Path, End-of-RIB forms);
- IPv6 text for every address made of 0, 1 and 0xffff groups;
- a seeded mutation run (truncation, bit flips, length lies, bounds games):
  the C function never raises, and whenever it returns a value the Python
  decoder returns the same; when Python raises, C returned None.

With PYBMPMON_REQUIRE_FASTPATH=1 (set in CI) a missing extension fails the
suite instead of skipping these tests.  ``PYBMPMON_FASTPATH_MUTATIONS`` sets
the number of mutated messages (default 100,000).
"""

from __future__ import annotations

import collections
import enum
import gc
import importlib
import os
import platform
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from accel import assert_no_leaks, synth

from pybmpmon.bgp import message
from pybmpmon.bgp.model import EMPTY_ATTRIBUTES, BgpContext, Nlri
from pybmpmon.errors import DecodeError
from pybmpmon.session import RouterSession

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
MUTATIONS = int(os.environ.get("PYBMPMON_FASTPATH_MUTATIONS", "100000"))
REQUIRED = os.environ.get("PYBMPMON_REQUIRE_FASTPATH", "") not in ("", "0")

try:
    _fastpath = importlib.import_module("pybmpmon._fastpath")
except ImportError:
    _fastpath = None

FAST = message.bind_fastpath(_fastpath) if _fastpath is not None else None
python_decode = message.decode_update_python


def test_the_extension_is_built_and_used():
    if _fastpath is None:
        if REQUIRED:
            pytest.fail("pybmpmon._fastpath is not built (PYBMPMON_REQUIRE_FASTPATH=1)")
        pytest.skip("pybmpmon._fastpath is not built; the pure Python decoder is in use")
    assert FAST is not None, "the extension does not match the model types"
    if os.environ.get("PYBMPMON_PURE_PYTHON", "") in ("", "0"):
        assert message.FASTPATH
        assert message._fast_decode_update is FAST
        # The public decoder really goes through C: only C leaves its results
        # untracked by the cyclic GC (see new_tuple() in _fastpath.c).
        body = update(attrs=attr(1, b"\0"), nlri=prefix(8, b"\x0a"))
        result = message.decode_update(body, 0, len(body), BgpContext())
        assert result.announced[0].nlri[0].prefix == "10.0.0.0/8"
        assert not gc.is_tracked(result)
        assert gc.is_tracked(python_decode(body, 0, len(body), BgpContext()))


needs_fastpath = pytest.mark.skipif(FAST is None, reason="pybmpmon._fastpath is not built")


@needs_fastpath
def test_pure_python_switch():
    code = "from pybmpmon.bgp import message; print(message.FASTPATH)"
    env = dict(os.environ, PYBMPMON_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False"


# -- comparing outcomes ------------------------------------------------------------


def same(a, b) -> bool:
    """Equal values of the same types all the way down; enum members by identity."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, enum.Enum):
        return a is b
    return a == b


def outcome(data, start, end, ctx):
    try:
        return python_decode(data, start, end, ctx)
    except DecodeError as error:
        return ("error", type(error), str(error), error.offset)


def cache_key(data: bytes, start: int, end: int, four_octet_as: bool = True):
    """The attribute cache key (and Attributes.wire) of a well-formed UPDATE
    body, found independently: the AS width octet, then the attribute block
    without MP_REACH/MP_UNREACH; empty when there is no other attribute."""
    withdrawn_end = start + 2 + int.from_bytes(data[start : start + 2], "big")
    pos = withdrawn_end + 2
    attr_end = pos + int.from_bytes(data[withdrawn_end:pos], "big")
    key = b""
    while pos < attr_end:
        head = 4 if data[pos] & 0x10 else 3
        length = int.from_bytes(data[pos + 2 : pos + head], "big")
        if data[pos + 1] not in (14, 15):
            key += data[pos : pos + head + length]
        pos += head + length
    return (b"\x01" if four_octet_as else b"\x00") + key if key else b""


class Pair:
    """Two contexts with the same settings: one decoded as decode_update does
    (C first, Python when it declines), one by the Python decoder alone."""

    def __init__(self, four_octet_as=True, add_path=frozenset(), cache_limit=20000):
        settings = dict(four_octet_as=four_octet_as, add_path=add_path, cache_limit=cache_limit)
        self.fast_ctx = BgpContext(**settings)
        self.py_ctx = BgpContext(**settings)
        self.handled = self.calls = 0

    def check(self, data, start, end) -> bool:
        """Decode both ways and compare; True when the C function handled it."""
        fc = self.fast_ctx
        result = FAST(data, start, end, fc.cache, fc.four_octet_as, fc.add_path, fc.cache_limit)
        expected = outcome(data, start, end, self.py_ctx)
        self.calls += 1
        where = f"{data[start:end].hex()} [{start}:{end}]"
        if result is None:
            got = outcome(data, start, end, fc)
            assert same(got, expected), where
        else:
            self.handled += 1
            assert not (type(expected) is tuple and expected[0] == "error"), (where, expected)
            assert same(result, expected), where
            key = cache_key(data, start, end, fc.four_octet_as)
            if key:
                assert fc.cache[key] is result.attributes, where
                assert result.attributes.wire == key, where
                assert self.py_ctx.cache[key] is expected.attributes
            else:
                assert result.attributes is EMPTY_ATTRIBUTES
        assert len(fc.cache) == len(self.py_ctx.cache), where
        return result is not None

    def check_caches(self):
        assert list(self.fast_ctx.cache) == list(self.py_ctx.cache)
        for key, value in self.fast_ctx.cache.items():
            assert same(value, self.py_ctx.cache[key])


# -- UPDATE builders -----------------------------------------------------------------


def attr(code: int, value: bytes, flags: int = 0x40, extended: bool = False) -> bytes:
    if extended or len(value) > 255:
        return struct.pack(">BBH", flags | 0x10, code, len(value)) + value
    return struct.pack(">BBB", flags, code, len(value)) + value


def update(withdrawn: bytes = b"", attrs: bytes = b"", nlri: bytes = b"") -> bytes:
    return (
        struct.pack(">H", len(withdrawn)) + withdrawn + struct.pack(">H", len(attrs)) + attrs + nlri
    )


def prefix(plen: int, address: bytes, path_id=None) -> bytes:
    head = b"" if path_id is None else struct.pack(">I", path_id)
    return head + bytes((plen,)) + address[: (plen + 7) // 8]


def mp_reach(afi: int, next_hop: bytes, nlri: bytes, safi: int = 1) -> bytes:
    return attr(14, struct.pack(">HBB", afi, safi, len(next_hop)) + next_hop + b"\0" + nlri, 0x80)


def mp_unreach(afi: int, nlri: bytes, safi: int = 1) -> bytes:
    return attr(15, struct.pack(">HB", afi, safi) + nlri, 0x80)


class Generator:
    """Seeded random UPDATE bodies, mostly well formed, sharing attribute blocks."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.blocks: list = []

    def v6_address(self) -> bytes:
        r = self.rng
        groups = [r.choice((0, 0, 0, 1, 0xFFFF, r.getrandbits(16))) for _ in range(8)]
        return b"".join(struct.pack(">H", g) for g in groups)

    def prefixes(self, afi: int, add_path: bool, count: int) -> bytes:
        r = self.rng
        out = b""
        for _ in range(count):
            bits = 32 if afi == 1 else 128
            plen = r.choice((0, bits, r.randint(0, bits), r.randint(bits // 2, bits)))
            address = r.randbytes(4) if afi == 1 else self.v6_address()
            if r.random() < 0.7 and plen % 8:  # usually clean host bits, sometimes not
                keep = (plen + 7) // 8
                mask = (0xFF << (8 - plen % 8)) & 0xFF
                address = address[: keep - 1] + bytes((address[keep - 1] & mask,)) + address[keep:]
            out += prefix(plen, address, r.getrandbits(32) if add_path else None)
        return out

    def attributes(self) -> list:
        r = self.rng
        items = []
        if r.random() < 0.9:
            items.append(attr(1, bytes((r.choice((0, 0, 1, 2)),))))
        if r.random() < 0.9:
            path = b""
            for _ in range(r.choice((0, 1, 1, 2, 3))):
                kind = r.choice((2, 2, 2, 1, 3, 4))
                count = r.choice((1, 2, 3, 5, r.randint(1, 255)))
                asns = [
                    r.choice((r.getrandbits(16), r.getrandbits(32), 23456)) for _ in range(count)
                ]
                path += bytes((kind, count)) + struct.pack(f">{count}I", *asns)
            items.append(attr(2, path))
        if r.random() < 0.6:
            items.append(attr(3, r.randbytes(4)))
        for code in (4, 5, 9):
            if r.random() < 0.4:
                items.append(attr(code, r.randbytes(4), 0x80))
        if r.random() < 0.2:
            items.append(attr(6, b""))
        if r.random() < 0.2:
            items.append(attr(7, r.randbytes(8), 0xC0))
        for code, size in ((8, 4), (10, 4), (16, 8), (32, 12)):
            if r.random() < 0.4:
                items.append(attr(code, r.randbytes(size * r.choice((1, 2, 3, 70))), 0xC0))
        extra = r.random()
        if extra < 0.03:
            items.append(attr(99, r.randbytes(3), 0xC0))  # unknown: kept raw by Python
        elif extra < 0.06 and items:
            items.append(r.choice(items))  # a duplicate: discarded by Python
        elif extra < 0.08:
            items.append(attr(35, r.randbytes(4)))  # ONLY_TO_CUSTOMER: Python only
        elif extra < 0.10:
            items.append(attr(1, bytes((r.randint(3, 255),))))  # bad ORIGIN: an error
        elif extra < 0.18:  # a malformed value: an error or a discard in Python
            code = r.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32))
            value = r.choice((b"", r.randbytes(r.choice((1, 2, 3, 5, 7, 9, 11, 13)))))
            if code == 2 and value:
                value = r.choice(
                    (
                        bytes((2, 0)),  # an empty segment
                        bytes((r.choice((0, 5, 255)), 1)) + r.randbytes(4),  # unknown segment type
                        bytes((2, 1)) + r.randbytes(4) + b"\x02",  # a lone octet after it
                        bytes((2, 3)) + r.randbytes(8),  # overrun
                    )
                )
            items = [it for it in items if it[1] != code] + [attr(code, value)]
        if r.random() < 0.3:
            items = [attr(it[1], it[4 if it[0] & 0x10 else 3 :], it[0], True) for it in items]
        r.shuffle(items)
        return items

    def update(self, ap4: bool = False, ap6: bool = False) -> bytes:
        r = self.rng
        shape = r.random()
        if shape < 0.03:
            return update()  # IPv4 End-of-RIB
        if shape < 0.06:
            return update(attrs=mp_unreach(r.choice((1, 2)), b""))  # End-of-RIB
        if r.random() < 0.5 and self.blocks:
            items = list(r.choice(self.blocks))
        else:
            items = self.attributes()
            self.blocks.append(items)
        withdrawn = self.prefixes(1, ap4, r.choice((0, 0, 0, 1, 3)))
        nlri = b""
        afi = r.choice((1, 2, 2))
        if r.random() < 0.5:
            hop = r.choice(
                (r.randbytes(4), self.v6_address(), self.v6_address() + self.v6_address())
            )
            if r.random() < 0.05:
                hop = r.randbytes(r.choice((12, 24, 48, 5)))  # VPN shapes, odd length
            count = r.choice((0, 1, 2, 5))
            items.insert(
                r.randint(0, len(items)),
                mp_reach(afi, hop, self.prefixes(afi, (ap4, ap6)[afi - 1], count)),
            )
        if r.random() < 0.3:
            count = r.choice((0, 1, 4))
            items.insert(
                r.randint(0, len(items)),
                mp_unreach(afi, self.prefixes(afi, (ap4, ap6)[afi - 1], count)),
            )
        if r.random() < 0.6:
            nlri = self.prefixes(1, ap4, r.choice((1, 1, 2, 4, 20)))
        return update(withdrawn, b"".join(items), nlri)


# -- recorded UPDATEs of real and synthetic streams ---------------------------------


def record_updates(stream: bytes, monkeypatch) -> list:
    """(body bytes, start, end, four_octet_as, add_path, context id) of every UPDATE
    a RouterSession decodes from *stream*."""
    calls = []

    def recorder(data, start, end, ctx):
        calls.append((bytes(data), start, end, ctx.four_octet_as, ctx.add_path, id(ctx)))
        return python_decode(data, start, end, ctx)

    import pybmpmon.bmp.decode as bmp_decode

    with monkeypatch.context() as patch:
        patch.setattr(bmp_decode, "decode_update", recorder)
        patch.setattr(bmp_decode, "_fast_route_monitoring", None)  # would bypass it
        patch.setattr(message, "decode_update", recorder)
        RouterSession().feed(stream)
    return calls


def replay(calls: list, **settings) -> tuple:
    """Replay recorded UPDATEs through Pairs (one per original context)."""
    pairs: dict = {}
    for data, start, end, four, add_path, ctx_id in calls:
        pair = pairs.get(ctx_id)
        if pair is None:
            options = dict(four_octet_as=four, add_path=add_path)
            options.update(settings)
            pair = pairs[ctx_id] = Pair(**options)
        pair.check(data, start, end)
    for pair in pairs.values():
        pair.check_caches()
    return sum(p.handled for p in pairs.values()), sum(p.calls for p in pairs.values())


CAPTURES = sorted(CORPUS.glob("*.bmp"))


@needs_fastpath
@pytest.mark.skipif(not CAPTURES, reason=f"no captures in {CORPUS}")
@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_corpus_updates_decode_identically(capture, monkeypatch):
    calls = record_updates(capture.read_bytes(), monkeypatch)
    handled, total = replay(calls)
    assert total == len(calls)
    if total >= 20:
        assert handled >= total // 3, f"C handled only {handled} of {total} UPDATEs"
    replay(calls, cache_limit=3)
    replay(calls, four_octet_as=False)  # a 2-octet session: C only serves cache hits


@needs_fastpath
@pytest.mark.parametrize("seed,peers", [(1, 1), (2, 3), (3, 2)])
def test_synthetic_table_decodes_identically(seed, peers, monkeypatch):
    stream = synth().generate(v4=2000 + 500 * seed, v6=700, seed=seed, peers=peers)
    calls = record_updates(stream, monkeypatch)
    handled, total = replay(calls)
    assert handled >= total - peers * 2 - 1  # all but the End-of-RIB markers of IPv6
    replay(calls, cache_limit=5)
    replay(calls, four_octet_as=False)


@needs_fastpath
@pytest.mark.parametrize("seed", range(4))
def test_random_updates_decode_identically(seed):
    gen = Generator(seed)
    add_paths = [
        frozenset(),
        frozenset({(1, 1)}),
        frozenset({(2, 1)}),
        frozenset({(1, 1), (2, 1)}),
        frozenset({(1, 4)}),
        {(2, 1)},
    ]
    pairs = [Pair(add_path=ap, cache_limit=limit) for ap in add_paths for limit in (20000, 4)]
    pairs.append(Pair(four_octet_as=False))
    for _ in range(3000):
        pair = gen.rng.choice(pairs)
        ap = pair.fast_ctx.add_path
        data = gen.update((1, 1) in ap, (2, 1) in ap)
        pad = gen.rng.choice((0, 0, 5))
        wrapped = bytes(pad) + data + bytes(gen.rng.choice((0, 0, 3)))
        pair.check(wrapped, pad, pad + len(data))
    for pair in pairs:
        pair.check_caches()
    assert sum(p.handled for p in pairs) > 0.4 * sum(p.calls for p in pairs)


@needs_fastpath
def test_ipv6_text_matches_inet_ntop():
    """Every address of 0, 1 and 0xffff groups (every zero-run shape and both
    embedded IPv4 forms), plus random ones, as prefixes and next hops."""
    if platform.libc_ver()[0] == "glibc":
        assert _fastpath.OWN_IPV6_TEXT  # its own formatter agreed with inet_ntop at import
    rng = random.Random(6)
    addresses = []
    for n in range(3**8):
        groups = [(0, 1, 0xFFFF)[(n // 3**i) % 3] for i in range(8)]
        addresses.append(b"".join(struct.pack(">H", g) for g in groups))
    addresses += [rng.randbytes(16) for _ in range(2000)]
    addresses += [bytes(12) + rng.randbytes(4) for _ in range(200)]
    addresses += [bytes(10) + b"\xff\xff" + rng.randbytes(4) for _ in range(200)]
    ctx = BgpContext()
    for i in range(0, len(addresses), 50):
        chunk = addresses[i : i + 50]
        nlri = b"".join(prefix(128, a) for a in chunk)
        body = update(attrs=mp_reach(2, chunk[0] + chunk[-1], nlri) + attr(1, b"\0"))
        result = FAST(body, 0, len(body), ctx.cache, True, frozenset(), 20000)
        assert result is not None
        (reach,) = result.announced
        assert [n.prefix for n in reach.nlri] == [
            socket.inet_ntop(socket.AF_INET6, a) + "/128" for a in chunk
        ]
        assert reach.next_hop == socket.inet_ntop(socket.AF_INET6, chunk[0])
        assert reach.link_local_next_hop == socket.inet_ntop(socket.AF_INET6, chunk[-1])


# -- cache semantics -----------------------------------------------------------------


@needs_fastpath
def test_cache_keys_hits_and_clearing():
    blocks = [
        attr(1, b"\0") + attr(2, bytes((2, 1)) + struct.pack(">I", 65000 + i)) for i in range(5)
    ]
    keys = [b"\x01" + block for block in blocks]  # a 4-octet AS session
    nlri = prefix(24, b"\xc0\x00\x02")
    reach = mp_reach(2, b"\x20\x01" + bytes(14), prefix(48, b"\x20\x01\x0d\xb8\x00\x01"))
    pair = Pair(cache_limit=3)
    fc, pc = pair.fast_ctx, pair.py_ctx
    seen = []
    for i in (0, 1, 0, 2, 3, 1, 4, 4):
        # MP_REACH in the middle of the block: cut out of the key.
        body = update(attrs=blocks[i][:4] + reach + blocks[i][4:], nlri=nlri)
        before = fc.cache.get(keys[i])
        assert pair.check(body, 0, len(body))
        assert list(fc.cache) == list(pc.cache)
        result = fc.cache[keys[i]]
        if before is not None:
            assert result is before  # a hit returns the cached object itself
        seen.append(list(fc.cache))
    # Cleared whenever an insert found 3 entries: 0 / 0 1 / hit / 0 1 2 / 3 / 3 1 / 3 1 4 / hit
    assert seen == [
        [keys[0]],
        [keys[0], keys[1]],
        [keys[0], keys[1]],
        [keys[0], keys[1], keys[2]],
        [keys[3]],
        [keys[3], keys[1]],
        [keys[3], keys[1], keys[4]],
        [keys[3], keys[1], keys[4]],
    ]


@needs_fastpath
def test_declining_leaves_no_trace():
    pair = Pair(cache_limit=1)
    good = update(attrs=attr(1, b"\0"), nlri=prefix(8, b"\x0a"))
    assert pair.check(good, 0, len(good))
    cache = dict(pair.fast_ctx.cache)
    # A new attribute block, then a prefix that runs past the end: Python raises
    # after filling the cache, C declines before touching it.
    bad = update(attrs=attr(1, b"\x01"), nlri=prefix(8, b"\x0a") + b"\x18\x01")
    fc = pair.fast_ctx
    assert FAST(bad, 0, len(bad), fc.cache, True, frozenset(), 1) is None
    assert fc.cache == cache
    assert not pair.check(bad, 0, len(bad))


@needs_fastpath
def test_odd_arguments_are_declined():
    body = update(attrs=attr(1, b"\0"), nlri=prefix(8, b"\x0a"))
    args = ({}, True, frozenset(), 20000)
    assert FAST(body, 0, len(body), *args) is not None
    assert FAST(bytearray(body), 0, len(body), *args) is None
    assert FAST(memoryview(body), 0, len(body), *args) is None
    assert FAST(body, -1, len(body), *args) is None
    assert FAST(body, 0, len(body) + 1, *args) is None
    assert FAST(body, 0, 2**70, *args) is None
    assert FAST(body, 0, len(body), [], True, frozenset(), 20000) is None  # not a dict
    assert FAST(body, 0, len(body), {}, True, frozenset(), "20000") is None
    assert FAST(body, 0, len(body), {}, 1, frozenset(), 20000) is None  # truthy, not True
    with pytest.raises(TypeError):
        FAST(body, 0, len(body))
    with pytest.raises((TypeError, ValueError)):
        _fastpath.configure(*(tuple for _ in range(9)))
    # A model whose fields moved: refused, so decode_update stays pure Python.
    Moved = collections.namedtuple("Moved", "announced attributes withdrawn end_of_rib")
    args9 = (Moved,) + (message.RouteSet, Nlri, message.Attributes, EMPTY_ATTRIBUTES)
    args9 += (
        tuple(message.Origin),
        tuple(message.AsPathSegmentType),
        "ipv4_unicast",
        "ipv6_unicast",
    )
    with pytest.raises(ValueError):
        _fastpath.configure(*args9)
    assert FAST(body, 0, len(body), *args) is not None  # still configured


# -- mutations -----------------------------------------------------------------------


def length_fields(data: bytes) -> list:
    """(offset, size) of the length fields of a well-formed UPDATE body."""
    fields = [(0, 2)]
    withdrawn_end = 2 + int.from_bytes(data[:2], "big")
    fields.append((withdrawn_end, 2))
    pos = withdrawn_end + 2
    end = pos + int.from_bytes(data[withdrawn_end:pos], "big")
    while pos + 3 <= end:
        size = 2 if data[pos] & 0x10 else 1
        fields.append((pos + 2, size))
        value = pos + 2 + size
        if data[pos + 1] == 14 and value + 4 <= len(data):
            fields.append((value + 3, 1))  # next hop length
        pos = value + int.from_bytes(data[pos + 2 : value], "big")
    return fields


def mutate(rng: random.Random, data: bytes) -> tuple:
    """A mutated copy of *data* and the (start, end) to decode it with."""
    buf = bytearray(data)
    op = rng.random()
    if op < 0.2 and buf:
        del buf[rng.randrange(len(buf)) :]
    elif op < 0.4 and buf:
        for _ in range(rng.choice((1, 1, 2, 4))):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif op < 0.7:
        offset, size = rng.choice(length_fields(data))
        if offset + size <= len(buf):
            old = int.from_bytes(buf[offset : offset + size], "big")
            new = rng.choice((old + 1, old - 1, old + rng.randint(2, 40), 0, 2 ** (8 * size) - 1))
            buf[offset : offset + size] = (new % 2 ** (8 * size)).to_bytes(size, "big")
    elif op < 0.8 and buf:
        buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 14, 15, 0x80, rng.getrandbits(8)))
    elif op < 0.9:
        at = rng.randrange(len(buf) + 1)
        if rng.random() < 0.5:
            buf[at:at] = bytes((rng.getrandbits(8),))
        else:
            del buf[at : at + 1]
    else:  # bounds games: a window into a bigger buffer, or an end past it
        pad = rng.randint(0, 8)
        out = bytes(pad) + bytes(buf) + rng.randbytes(rng.randint(0, 8))
        return out, pad, pad + len(buf) + rng.choice((0, 0, -1, 1, 50))
    return bytes(buf), 0, len(buf)


@needs_fastpath
def test_mutated_updates(monkeypatch):
    rng = random.Random(7606)
    seeds = [
        c[0][c[1] : c[2]] for p in CAPTURES for c in record_updates(p.read_bytes(), monkeypatch)
    ]
    gen = Generator(99)
    seeds += [gen.update() for _ in range(500)]
    seeds += [gen.update(True, True) for _ in range(100)]
    pairs = [
        Pair(),
        Pair(cache_limit=2),
        Pair(add_path=frozenset({(1, 1), (2, 1)})),
        Pair(four_octet_as=False),
    ]
    handled = 0
    for i in range(MUTATIONS):
        data, start, end = mutate(rng, rng.choice(seeds))
        handled += rng.choice(pairs).check(data, start, end)
    for pair in pairs:
        pair.check_caches()
    assert handled > MUTATIONS // 10  # the mutations still exercise the C decoder


# -- reference counting --------------------------------------------------------------


@needs_fastpath
def test_no_leaks():
    """Decoding and dropping the results (handled, declined and mutated
    messages) returns every allocated block, and the shared constants keep
    their reference counts."""
    gen = Generator(5)
    rng = random.Random(5)
    bodies = [gen.update() for _ in range(300)] + [gen.update(True, True) for _ in range(100)]
    bodies += [mutate(rng, b)[0] for b in bodies]
    add_path = frozenset({(1, 1), (2, 1)})
    watched = [
        None,
        True,
        False,
        EMPTY_ATTRIBUTES,
        Nlri,
        *message.Origin,
        *message.AsPathSegmentType,
    ]

    def run():
        for limit in (3, 20000):
            cache = {}
            for i, body in enumerate(bodies):
                FAST(
                    body, 0, len(body), cache, True, add_path if i % 4 == 0 else frozenset(), limit
                )
            cache.clear()

    assert_no_leaks(run, watched)
