"""The optional C accelerator of the batch builder (pybmpmon/_rowpath.c).

The Python code is the reference.  With the accelerator, every batch must
hold exactly the parts the Python loop in ``BatchBuilder._route_set`` alone
gives (segments with the same lines, generations, attribute lines, scopes,
route counts; operations in the same places).  Checked on the corpus
captures, a synthetic table with flaps that close segments early, and
hand-made route sets that mix every shape the C loop leaves to Python.  Then
route_lines() directly: where it stops, and that odd arguments make it take
nothing.  attribute_text() must give rows.attribute_text's text or None, on
every decoded set of the corpus and a synthetic table and on hand-made sets
of each shape.  Last, no leaks.

With PYBMPMON_REQUIRE_FASTPATH=1 (set in CI) a missing extension fails the
suite instead of skipping these tests.
"""

from __future__ import annotations

import copy
import importlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from accel import assert_no_leaks, synth

from pybmpmon.bgp.model import Attributes, Nlri
from pybmpmon.session import RouterSession
from pybmpmon.store import rows
from pybmpmon.store.rows import BatchBuilder, Segment

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
REQUIRED = os.environ.get("PYBMPMON_REQUIRE_FASTPATH", "") not in ("", "0")

try:
    _rowpath = importlib.import_module("pybmpmon._rowpath")
except ImportError:
    _rowpath = None

needs_rowpath = pytest.mark.skipif(_rowpath is None, reason="pybmpmon._rowpath is not built")


def test_the_extension_is_built_and_used():
    if _rowpath is None:
        if REQUIRED:
            pytest.fail("pybmpmon._rowpath is not built (PYBMPMON_REQUIRE_FASTPATH=1)")
        pytest.skip("pybmpmon._rowpath is not built; the builder's Python loop is in use")
    if os.environ.get("PYBMPMON_PURE_PYTHON", "") in ("", "0"):
        assert rows.ROWPATH and rows._route_lines is _rowpath.route_lines


@needs_rowpath
def test_pure_python_switch():
    code = "from pybmpmon.store import rows; print(rows.ROWPATH)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60,
                         env=dict(os.environ, PYBMPMON_PURE_PYTHON="1"))
    assert out.stdout.strip() == "False"


# -- whole batches, with and without C ---------------------------------------------

def _snapshot(batches) -> list:
    """Everything a batch gives the database, in comparable form."""
    out = []
    for batch in batches:
        parts = []
        for part in batch.parts:
            if isinstance(part, Segment):
                parts.append(("segment", part.lines, part.attrs, part.gens, part.max_gen,
                              part.scopes, part.peers, part.routes))
            else:
                parts.append(("op", part.kind, part.router_ip, part.time, part.data))
        out.append((parts, batch.route_count, batch.days, batch.attr_digests))
    return out


def _build(feed, monkeypatch, lines, events=None, max_gen=8, batch_routes=5000) -> list:
    """The batches of ``feed`` (a list of (router, events, received_at)), the
    builder calling ``lines`` as route_lines and ``events`` as route_events."""
    monkeypatch.setattr(rows, "_route_lines", lines)
    monkeypatch.setattr(rows, "_route_events", events)
    builder = BatchBuilder(max_gen=max_gen)
    batches = []
    for router_ip, events, received_at in feed:
        builder.add_events(router_ip, events, received_at)
        if builder.route_count >= batch_routes:
            batches.append(builder.take("b%d" % len(batches)))
            builder.confirm(batches[-1])
    batches.append(builder.take("last"))
    return batches


def _assert_same(feed, monkeypatch, **kwargs) -> list:
    """Python alone, C's route lines alone, and C for whole events build the same."""
    python = _snapshot(_build(feed, monkeypatch, None, **kwargs))
    lines = _snapshot(_build(feed, monkeypatch, _rowpath.route_lines, **kwargs))
    assert lines == python
    events = _snapshot(_build(feed, monkeypatch, _rowpath.route_lines, _rowpath.route_events,
                              **kwargs))
    assert events == python
    return python


def _decoded(data: bytes, router_ip: str, chunk: int = 65536) -> list:
    session = RouterSession()
    return [(router_ip, session.feed(data[i:i + chunk]), 1700000000.0 + i / 1e6)
            for i in range(0, len(data), chunk)]


@needs_rowpath
@pytest.mark.parametrize("capture", sorted(CORPUS.glob("*.bmp")), ids=lambda p: p.name)
def test_corpus_captures_build_identically(capture, monkeypatch):
    feed = _decoded(capture.read_bytes(), "192.0.2.254", chunk=4096)
    python = _assert_same(feed, monkeypatch, batch_routes=200)
    routes = sum(len(rs.nlri) for _router, events, _at in feed for event in events
                 if hasattr(event, "update")
                 for rs in event.update.announced + event.update.withdrawn)
    assert sum(batch[1] for batch in python) == routes


@needs_rowpath
def test_a_table_with_flaps_builds_identically(monkeypatch):
    """Two peers' tables, each read three times over (chunk by chunk): every key
    occurs three times, so max_gen=2 closes segments in the middle of route sets."""
    data = synth().generate(v4=6000, v6=1500, seed=7, peers=2)
    feed = [item for item in _decoded(data, "192.0.2.254", chunk=8192) for _ in range(3)]
    python = _assert_same(feed, monkeypatch, max_gen=2, batch_routes=10**9)
    segments = [p for batch in python for p in batch[0] if p[0] == "segment"]
    assert len(segments) > len(python)  # segments closed early
    assert max(p[4] for p in segments) == 1
    assert sum(batch[1] for batch in python) == 3 * 2 * 7500


@needs_rowpath
def test_mixed_route_sets_build_identically(monkeypatch, bmp_events):
    """C stops at each route it leaves to Python (Add-Path id, labels, a path
    id of 0, text that is not ASCII, a repeated key) and resumes after it."""
    ev = bmp_events
    peer = ev.peer()
    p = "10.0.0.0/8"
    mixed = (Nlri("10.1.0.0/16"), Nlri(p, 0), Nlri(p), Nlri(p, 7), Nlri("10.2.0.0/16"),
             Nlri("10.3.0.0/16", labels=(16,)), Nlri(p), Nlri("10.4.0.0/16"),
             Nlri("10.5.0.0/16", None, None, ()), Nlri("10.\u0666.0.0/16"), Nlri(p))
    events = [ev.announce(peer, [], nlri=mixed), ev.withdraw(peer, ["10.1.0.0/16"]),
              ev.announce(peer, [], nlri=mixed[::-1]),
              ev.announce(peer, ["2001:db8::/32"], family="ipv6_unicast"),
              ev.announce(peer, [], nlri=list(mixed)),  # a list, not a tuple
              ev.peer_down(peer), ev.announce(peer, [], nlri=mixed)]
    python = _assert_same([("r", events, 1700000000.0)], monkeypatch, max_gen=3)
    (parts, route_count, _days, _digests), = python
    assert route_count == 4 * len(mixed) + 2
    # 10.0.0.0/8 without path id (or with 0) is 4 routes of each set: with
    # max_gen=3 the fourth closes a segment, after the Peer Down too.
    assert [p[0] if p[0] == "segment" else p[1] for p in parts] == [
        "segment", "segment", "segment", "segment", "peer_down", "segment", "segment"]


# -- attribute sets -------------------------------------------------------------------

def _both_texts(attrs, next_hop, monkeypatch) -> tuple:
    """(C's text or None, the text attribute_text gives with C, without C)."""
    with_c = rows.attribute_text(attrs, next_hop)
    with monkeypatch.context() as patch:
        patch.setattr(rows, "_attribute_text", None)
        python = rows.attribute_text(attrs, next_hop)
    return _rowpath.attribute_text(attrs, rows._ip_or_null(next_hop)), with_c, python


def _decoded_sets(data: bytes) -> dict:
    """{(id of the Attributes, next hop): (Attributes, next hop)} of a stream's announcements."""
    found = {}
    for _router, events, _at in _decoded(data, "192.0.2.254"):
        for event in events:
            if hasattr(event, "update"):
                attrs = event.update.attributes
                for rs in event.update.announced:
                    next_hop = rs.next_hop or attrs.next_hop
                    found[(id(attrs), next_hop)] = (attrs, next_hop)
    return found


@needs_rowpath
def test_decoded_attribute_sets_format_identically(monkeypatch):
    """Every set of the corpus captures (many with extended communities, which
    C leaves to Python) and of a synthetic table (C writes every one)."""
    streams = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.bmp"))}
    streams["synthetic"] = synth().generate(v4=4000, v6=1000, seed=3, peers=2)
    written = {}
    for name, data in streams.items():
        handled = total = 0
        for attrs, next_hop in _decoded_sets(data).values():
            fast, with_c, python = _both_texts(attrs, next_hop, monkeypatch)
            assert with_c == python
            if fast is not None:
                assert fast == python
                handled += 1
            total += 1
        written[name] = (handled, total)
    handled, total = written.pop("synthetic")
    assert handled == total > 1000
    assert sum(h for h, _t in written.values()) > 500  # the corpus, without ext communities


@needs_rowpath
@pytest.mark.parametrize("attrs, next_hop, c_writes", [
    (Attributes(), None, True),
    (Attributes(origin=2, as_path=((2, (65001,)), (1, ()), (1, (65010, 65011)))), "192.0.2.1",
     True),  # an empty segment; the path ends in an AS_SET: no origin AS
    (Attributes(as_path=((1, (1, 2)), (2, (3,)), (4, ()), (3, (4,)))), "x", True),
    (Attributes(as_path=((2, ()),)), "192.0.2.1", False),  # no last ASN: Python's error
    (Attributes(origin=7), "192.0.2.1", False),
    (Attributes(origin=0, med=0, local_pref=4294967295, atomic_aggregate=True,
                aggregator=(4200000010, "192.0.2.9"), communities=((0, 0), (65535, 65281)),
                large_communities=((4294967295, 0, 1),)), "2001:DB8::1", True),
    (Attributes(aggregator=(65001, "a\tb")), "192.0.2.1", False),  # needs escaping
    (Attributes(aggregator=(65001, "\u0666")), "192.0.2.1", False),
    (Attributes(aggregator=(-1, "192.0.2.1")), "192.0.2.1", False),
    (Attributes(med=True), "192.0.2.1", False),  # not an exact int
    (Attributes(communities=((1, 2, 3),)), "192.0.2.1", False),
    (Attributes(originator_id="192.0.2.7"), "192.0.2.1", False),
    (Attributes(cluster_list=("192.0.2.5",)), "192.0.2.1", False),
    (Attributes(ext_communities=(bytes.fromhex("0002fde900000001"),)), "192.0.2.1", False),
    (Attributes(as_path=((2, tuple(range(64496, 65000))),),
                communities=tuple((65001, i) for i in range(400))), "192.0.2.1", True),
])
def test_attribute_sets_made_by_hand(attrs, next_hop, c_writes, monkeypatch):
    try:
        fast, with_c, python = _both_texts(attrs, next_hop, monkeypatch)
    except (IndexError, ValueError):  # Python's own answer to these shapes
        assert not c_writes
        assert _rowpath.attribute_text(attrs, "192.0.2.1") is None
        return
    assert with_c == python
    assert (fast is not None) == c_writes
    if c_writes:
        assert fast == python


@needs_rowpath
def test_attribute_text_declines_odd_arguments():
    assert _rowpath.attribute_text(tuple(Attributes()), "192.0.2.1") is None
    assert _rowpath.attribute_text(Attributes(), None) is None
    assert _rowpath.attribute_text(Attributes(), "\u0666") is None
    with pytest.raises(TypeError):
        _rowpath.attribute_text(Attributes())
    with pytest.raises(ValueError):
        _rowpath.configure(Nlri)  # no such fields; the configured class stays
    assert _rowpath.attribute_text(Attributes(), "192.0.2.1") is not None


# -- route_lines itself -------------------------------------------------------------

@needs_rowpath
def test_route_lines_stops_where_python_must_take_over():
    lines, gens = [], {"10.9.0.0/16": 1}
    nlris = (Nlri("10.0.0.0/8"), Nlri("10.1.0.0/16", None), Nlri("10.0.0.0/8", 0),
             Nlri("10.9.0.0/16"), Nlri("10.2.0.0/16", 3))
    assert _rowpath.route_lines(lines, gens, nlris, 0, "\tT\t0\t", "\tTAIL\n", 8) == (4, 2)
    assert lines == ["0\tT\t0\t10.0.0.0/8\t10.0.0.0/8\tTAIL\n",
                     "0\tT\t0\t10.1.0.0/16\t10.1.0.0/16\tTAIL\n",
                     "1\tT\t0\t10.0.0.0/8\t10.0.0.0/8\tTAIL\n",
                     "2\tT\t0\t10.9.0.0/16\t10.9.0.0/16\tTAIL\n"]
    assert gens == {"10.9.0.0/16": 2, "10.0.0.0/8": 1, "10.1.0.0/16": 0}
    # From 4 on: a path id stops it at once; so does the generation limit.
    assert _rowpath.route_lines(lines, gens, nlris, 4, "\t", "\n", 8) == (4, 0)
    assert _rowpath.route_lines(lines, gens, nlris, 3, "\t", "\n", 3) == (3, 0)
    assert len(lines) == 4 and gens["10.9.0.0/16"] == 2


@needs_rowpath
@pytest.mark.parametrize("args", [
    ([], [], (Nlri("10.0.0.0/8"),), 0, "\t", "\n", 8),  # gens not a dict
    ((), {}, (Nlri("10.0.0.0/8"),), 0, "\t", "\n", 8),  # lines not a list
    ([], {}, iter([Nlri("10.0.0.0/8")]), 0, "\t", "\n", 8),  # not a tuple or list
    ([], {}, (Nlri("10.0.0.0/8"),), 0, "\t\u00e9", "\n", 8),  # text not ASCII
    ([], {}, (Nlri("10.0.0.0/8"),), 0, "\t", b"\n", 8),
    ([], {}, ("10.0.0.0/8", ("10.0.0.0/8",)), 0, "\t", "\n", 8),  # not Nlri-shaped
    ([], {"10.0.0.0/8": "x"}, (Nlri("10.0.0.0/8"),), 0, "\t", "\n", 8),  # odd generation
])
def test_route_lines_takes_nothing_it_does_not_understand(args):
    lines, gens = args[0], args[1]
    before = copy.copy(gens)
    assert _rowpath.route_lines(*args) == (0, 0)
    assert lines in ([], ()) and gens == before


@needs_rowpath
def test_route_lines_does_not_append_to_what_it_reads():
    same = [Nlri("10.0.0.0/8")]
    assert _rowpath.route_lines(same, {}, same, 0, "\t", "\n", 8) == (0, 0)
    assert same == [Nlri("10.0.0.0/8")]


@needs_rowpath
def test_route_lines_argument_errors():
    with pytest.raises(TypeError):
        _rowpath.route_lines([], {}, ())
    with pytest.raises(TypeError):
        _rowpath.route_lines([], {}, (), "0", "\t", "\n", 8)


@needs_rowpath
def test_no_leaks():
    """Lines, generations and attribute texts dropped return every block; the
    prefixes, Nlri tuples, sets and strings passed in keep their reference counts."""
    nlris = tuple(Nlri(f"10.{i}.0.0/16") for i in range(200)) + (Nlri("10.0.0.0/8", 5),)
    pre, tail = "\t1.0\t2.0\t0\t", "\t0\t\\N\tf\t42\t\\N\n"
    watched = [pre, tail, nlris, *nlris, *(n.prefix for n in nlris)]

    sets = [Attributes(), Attributes(origin=7), Attributes(originator_id="192.0.2.7"),
            Attributes(as_path=((2, tuple(range(64496, 65000))),),
                       communities=tuple((65001, i) for i in range(400)),
                       aggregator=(65001, "192.0.2.9"))]
    watched += sets

    def run():
        for attrs in sets * 50:
            _rowpath.attribute_text(attrs, "192.0.2.1")
        for _ in range(20):
            lines, gens = [], {}
            for _ in range(3):  # generations 0..2, then the limit stops it
                assert _rowpath.route_lines(lines, gens, nlris, 0, pre, tail, 3)[0] == 200
            assert _rowpath.route_lines(lines, gens, nlris, 0, pre, tail, 3) == (0, 0)
            assert _rowpath.route_lines(lines, gens, nlris, 200, pre, tail, 3) == (200, 0)

    assert_no_leaks(run, watched)


# -- route_events and wire_digest themselves ----------------------------------------

def _counting(monkeypatch) -> list:
    """Make the builder count the events route_events takes (in counts[0])."""
    counts = [0]

    def counting(builder, router_ip, events, start, received_at):
        stop = _rowpath.route_events(builder, router_ip, events, start, received_at)
        counts[0] += stop - start
        return stop

    monkeypatch.setattr(rows, "_route_lines", _rowpath.route_lines)
    monkeypatch.setattr(rows, "_route_events", counting)
    return counts


@needs_rowpath
def test_route_events_takes_nearly_all_of_a_table(monkeypatch):
    """So that the comparisons above are of C's work, not of Python's twice."""
    counts = _counting(monkeypatch)
    builder = BatchBuilder()
    offered = 0
    for router_ip, events, at in _decoded(synth().generate(v4=6000, v6=1500, seed=7, peers=2),
                                          "192.0.2.254", chunk=8192):
        builder.add_events(router_ip, events, at)
        offered += sum(1 for e in events if type(e).__name__ == "RouteMonitoring")
    assert offered > 2000
    assert counts[0] >= 0.99 * offered


@needs_rowpath
def test_route_events_stops_at_what_python_must_take(monkeypatch, bmp_events):
    ev = bmp_events
    a, b = ev.peer(), ev.peer("192.0.2.2", asn=4200000010)
    events = [
        ev.announce(a, ["10.0.0.0/8"]),  # 0: a's first: the builder has no last peer yet
        ev.announce(a, ["10.1.0.0/16"]),  # 1: C
        ev.withdraw(a, ["10.0.0.0/8"]),  # 2: C
        ev.announce(b, ["10.2.0.0/16"]),  # 3: another peer
        ev.announce(b, ["10.3.0.0/16"], family="ipv4_labeled_unicast",
                    nlri=(Nlri("10.3.0.0/16", labels=(16,)),)),  # 4: labels
        ev.announce(b, [], nlri=(Nlri("10.4.0.0/16", 7),)),  # 5: a path id
        ev.end_of_rib(b),  # 6
        ev.announce(b, ["2001:db8::/32"], family="ipv6_unicast"),  # 7: C
        ev.announce(b._replace(timestamp=1.0), ["10.5.0.0/16"]),  # 8: C, received time
        ev.peer_down(b),  # 9
        ev.announce(b, ["10.6.0.0/16"]),  # 10: C
    ]
    taken = []

    def recording(builder, router_ip, events, start, received_at):
        stop = _rowpath.route_events(builder, router_ip, events, start, received_at)
        taken.extend(range(start, stop))
        return stop

    monkeypatch.setattr(rows, "_route_lines", _rowpath.route_lines)
    monkeypatch.setattr(rows, "_route_events", recording)
    BatchBuilder().add_events("192.0.2.254", events, 1700000000.0)
    assert taken == [1, 2, 7, 8, 10]
    _assert_same([("192.0.2.254", events, 1700000000.0)], monkeypatch)


@needs_rowpath
def test_route_events_declines_odd_arguments(bmp_events):
    builder = BatchBuilder()
    peer = bmp_events.peer()
    events = [bmp_events.announce(peer, ["10.0.0.0/8"])] * 3
    builder.add_events("192.0.2.254", events[:1], 1700000000.0)  # the peer is now known
    taken = builder.route_count
    assert _rowpath.route_events(builder, "192.0.2.254", events, 0, 1700000000) == 0  # an int
    assert _rowpath.route_events(builder, b"192.0.2.254", events, 0, 1.0) == 0
    assert _rowpath.route_events(builder, "192.0.2.254", iter(events), 0, 1.0) == 0
    assert _rowpath.route_events(builder, "192.0.2.254", events, 5, 1.0) == 5
    assert builder.route_count == taken  # nothing was added
    with pytest.raises(ValueError):
        _rowpath.route_events(builder, "192.0.2.254", events, -1, 1.0)
    with pytest.raises(TypeError):
        _rowpath.route_events(builder, "192.0.2.254", events, 0)
    with pytest.raises(ValueError):
        _rowpath.configure_events(Nlri, Nlri, Nlri, Nlri, Nlri, {}, len, 1.0, 2.0)
    assert _rowpath.route_events(builder, "192.0.2.254", events, 0, 1700000000.0) == 3
    assert builder.route_count == taken + 3
    # A builder whose state rows.py would never make: an error, not a crash.
    builder.days = []
    with pytest.raises(TypeError):
        _rowpath.route_events(builder, "192.0.2.254", events, 0, 1800000000.0)


@needs_rowpath
def test_wire_digest_is_attribute_digests_own(monkeypatch):
    """The C digest (its BLAKE2b and its copy of the domain) against
    attribute_digest's hashlib code, at lengths around BLAKE2b's 128-octet
    blocks, for each next hop shape."""
    monkeypatch.setattr(rows, "_wire_digest", None)  # rows' hashlib code from here on
    rng = random.Random(5)
    for size in [*range(1, 260), 383, 384, 385, 4096]:
        attrs = Attributes(wire=rng.randbytes(size))
        for next_hop in (None, "", "192.0.2.1", "2001:db8::1", "caf\u00e9"):
            assert (_rowpath.wire_digest(next_hop, attrs.wire)
                    == rows.attribute_digest(attrs, next_hop))
    for args in ((None, b""), ("x", bytearray(b"ab")), (5, b"ab"), ("\ud800", b"ab")):
        assert _rowpath.wire_digest(*args) is None  # Python's code decides


@needs_rowpath
def test_route_events_and_wire_digest_do_not_leak():
    data = synth().generate(v4=3000, v6=500, seed=11, peers=2)
    feed = _decoded(data, "192.0.2.254", chunk=8192)
    wire = bytes(range(200))
    watched = [wire, *(events for _r, events, _a in feed)]

    def run():
        builder = BatchBuilder(max_gen=2)
        for _ in range(3):  # repeats: generations, closed segments
            for router_ip, events, at in feed:
                builder.add_events(router_ip, events, at)
            builder.confirm(builder.take())
        for _ in range(100):
            _rowpath.wire_digest("192.0.2.1", wire)

    assert_no_leaks(run, watched)


@needs_rowpath
def test_route_events_calls_rows_functions_as_they_are(monkeypatch):
    """As Python code would, route_events looks attribute_digest and
    attribute_text up in rows at each call, so replacing them takes effect."""
    feed = _decoded(synth().generate(v4=200, v6=0, seed=2, peers=1), "192.0.2.254")
    counts = _counting(monkeypatch)
    monkeypatch.setattr(rows, "attribute_digest", lambda attrs, hop: 7)
    monkeypatch.setattr(rows, "attribute_text", lambda attrs, hop: "text")
    builder = BatchBuilder()
    for router_ip, events, at in feed:
        builder.add_events(router_ip, events, at)
    (seg,) = [part for part in builder.take().parts if isinstance(part, Segment)]
    assert counts[0] > 10
    assert {line.split("\t")[9] for line in seg.lines} == {"7"}
    assert seg.attrs == ["7\ttext\n"]
