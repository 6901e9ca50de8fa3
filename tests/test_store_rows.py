"""Events to COPY lines and operations (pybmpmon.store.rows), without a database."""

from __future__ import annotations

import time
from hashlib import blake2b
from ipaddress import ip_address

import pytest

from pybmpmon.store.operations import clean_text, sane_time
from pybmpmon.bgp.message import decode_update
from pybmpmon.bgp.model import Attributes, BgpContext
from pybmpmon.store import rows
from pybmpmon.store.rows import (
    NULL,
    BatchBuilder,
    Op,
    Segment,
    attribute_digest,
    attribute_text,
    copy_escape,
    pg_array,
)


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("tab\there", "tab\\there"),
    ("line\nbreak\r", "line\\nbreak\\r"),
    ("back\\slash", "back\\\\slash"),
    ("nul\x00byte", "nul\ufffdbyte"),
    ("\\N", "\\\\N"),  # a literal backslash-N is not NULL
])
def test_copy_escape(text, expected):
    assert copy_escape(text) == expected


def test_clean_text():
    assert clean_text(None) is None
    assert clean_text("a\x00b\tc\n") == "a\ufffdb\tc\n"


@pytest.mark.parametrize("items, expected", [
    ([], "{}"),
    ([65001, 4294967295], "{65001,4294967295}"),
    (["65001:1", "rt:65001:1"], "{65001:1,rt:65001:1}"),
    (["a b", 'q"x', "c,d", "NULL", "", "{x}", "back\\"],
     '{"a b","q\\"x","c,d","NULL","","{x}","back\\\\"}'),
])
def test_pg_array(items, expected):
    assert pg_array(items) == expected


def test_sane_time():
    assert sane_time(0.0, 1000000.0) == 1000000.0
    assert sane_time(999000.0, 1000000.0) == 999000.0
    assert sane_time(1000.0, 1000000.0) == 1000000.0  # boot time or a clock far off
    assert sane_time(1000000.0 + 3600, 1000000.0) == 1000000.0  # future


def fields(line):
    assert line.endswith("\n")
    return line[:-1].split("\t")


def test_attribute_text_and_digest_of_a_set_made_by_hand():
    """The stage_attrs text of a set with every field and of an empty one; a set
    not decoded from the wire is named by a digest of that text."""
    full = Attributes(origin=1, as_path=((2, (65001, 4200000010)), (1, (65010, 65011))),
                      med=0, local_pref=4294967295, atomic_aggregate=True,
                      aggregator=(65001, "192.0.2.9"), communities=((65001, 1), (0, 0)),
                      originator_id="192.0.2.7", cluster_list=("192.0.2.5", "192.0.2.6"),
                      ext_communities=(bytes.fromhex("0002fde900000001"),),
                      large_communities=((4200000001, 1, 2),))
    text = attribute_text(full, "2001:DB8::1")
    assert text.split("\t") == [
        "2001:db8::1", "egp", "{65001,4200000010,65010,65011}", NULL, "0",
        "4294967295", "{65001:1,0:0}", "{4200000001:1:2}", "{rt:65001:1}", "t",
        "65001:192.0.2.9", "192.0.2.7", "{192.0.2.5,192.0.2.6}"]
    digest = attribute_digest(full, "2001:DB8::1")
    assert digest == int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big",
                                    signed=True)
    assert attribute_digest(full._replace(), "2001:db8::1") == digest  # equal content
    assert attribute_digest(full._replace(med=1), "2001:db8::1") != digest
    empty = attribute_text(Attributes(origin=7), None)
    assert empty.split("\t") == [NULL, "7", "{}", NULL, NULL, NULL, NULL, NULL, NULL, "f",
                                  NULL, NULL, NULL]
    one = attribute_text(Attributes(as_path=((2, (64496,)),)), "192.0.2.1")
    assert one.split("\t")[1:4] == [NULL, "{64496}", "64496"]


def _tlv(flags: int, code: int, value: bytes) -> bytes:
    return bytes((flags, code, len(value))) + value


def _update_body(attrs: bytes, nlri: bytes = b"") -> bytes:
    return b"\0\0" + len(attrs).to_bytes(2, "big") + attrs + nlri


# ORIGIN IGP, AS_PATH, NEXT_HOP, COMMUNITIES.  The AS_PATH octets are one
# AS_SEQUENCE of two 4-octet ASNs (65537, 33663949) and, read with 2-octet
# ASNs, two: (1, 1) and (43981,).
_WIRE_ATTRS = (_tlv(0x40, 1, b"\0") + _tlv(0x40, 2, bytes.fromhex("02020001000102 01abcd"))
               + _tlv(0x40, 3, bytes((192, 0, 2, 1)))
               + _tlv(0xC0, 8, (65001).to_bytes(2, "big") + (7).to_bytes(2, "big")))


def _mp_reach_v6(next_hop: str) -> bytes:
    value = (b"\0\x02\x01\x10" + ip_address(next_hop).packed + b"\0"
             + bytes((32,)) + ip_address("2001:db8::").packed[:4])
    return bytes((0x90, 14)) + len(value).to_bytes(2, "big") + value


def _decoded(body: bytes, four_octet_as: bool = True) -> Attributes:
    return decode_update(body, 0, len(body), BgpContext(four_octet_as=four_octet_as)).attributes


def test_a_decoded_set_is_named_by_its_wire_octets():
    body = _update_body(_WIRE_ATTRS, bytes((24, 10, 0, 0)))
    attrs = _decoded(body)
    assert attrs.wire == b"\x01" + _WIRE_ATTRS
    assert attrs.as_path == ((2, (65537, 33663949)),)
    digest = attribute_digest(attrs, "192.0.2.1")
    assert digest == int.from_bytes(
        blake2b(b"192.0.2.1\0" + attrs.wire, digest_size=8, person=b"pybmpmon-wire").digest(),
        "big", signed=True)
    # Another decode of the same octets (a fresh object): the same digest.
    again = _decoded(body)
    assert again is not attrs and attribute_digest(again, "192.0.2.1") == digest
    # The same octets in a 2-octet AS session are another AS path, another set.
    narrow = _decoded(body, four_octet_as=False)
    assert narrow.wire == b"\x00" + _WIRE_ATTRS and narrow.as_path != attrs.as_path
    assert attribute_digest(narrow, "192.0.2.1") != digest
    # Not the digest of the same content made by hand (no wire).
    assert attribute_digest(attrs._replace(wire=b""), "192.0.2.1") != digest
    # MP routes: the next hop sits outside the wire octets, so it is hashed too.
    v6 = [_decoded(_update_body(_mp_reach_v6(hop) + _WIRE_ATTRS)) for hop in
          ("2001:db8::1", "2001:db8::2")]
    assert v6[0].wire == v6[1].wire == attrs.wire  # MP_REACH is cut out
    assert attribute_digest(v6[0], "2001:db8::1") != attribute_digest(v6[1], "2001:db8::2")
    assert attribute_digest(v6[0], None) != attribute_digest(v6[0], "2001:db8::1")


def test_decoded_sets_are_formatted_only_when_sent(bmp_events, monkeypatch):
    """Ten distinct decoded sets, each used by two routes in each of two rounds
    of batches: formatted once, in the first batch that uses it; after that
    batch commits, named by digest only."""
    ev = bmp_events
    formatted = []
    text_of = rows.attribute_text
    monkeypatch.setattr(rows, "attribute_text",
                        lambda attrs, hop: formatted.append(attrs.med) or text_of(attrs, hop))
    builder = BatchBuilder()
    peer = ev.peer()
    digests = {}
    for rounds in range(2):
        for n in range(10):
            wire = _WIRE_ATTRS + _tlv(0x80, 4, n.to_bytes(4, "big"))  # MED n
            attrs = _decoded(_update_body(wire))
            builder.add_events("r", [ev.announce(peer, [f"10.{n}.0.0/16"], attrs),
                                     ev.announce(peer, [f"11.{n}.0.0/16"], attrs)])
            batch = builder.take()
            (seg,) = batch.parts
            digest = {fields(line)[9] for line in seg.lines}
            assert len(digest) == 1
            assert digests.setdefault(n, digest) == digest  # same set, same digest
            assert len(seg.attrs) == (1 if rounds == 0 else 0)
            if rounds == 0:
                assert fields(seg.attrs[0])[0] == next(iter(digest))
                assert fields(seg.attrs[0])[5] == str(n)  # the MED column
            builder.confirm(batch)
    assert formatted == list(range(10))
    assert len(set(map(frozenset, digests.values()))) == 10


def test_unicast_line_layout(bmp_events):
    ev = bmp_events
    builder = BatchBuilder()
    peer = ev.peer(timestamp=0.0)
    attrs = ev.attrs(as_path=(65001, 65100), med=5, communities=((65001, 1),))
    routes = builder.add_events("10.0.0.1", [ev.announce(peer, ["10.0.0.0/8"], attrs),
                                             ev.withdraw(peer, ["11.0.0.0/8"])], 1700000000.5)
    assert routes == 2
    batch = builder.take()
    (seg,) = batch.parts
    announce, withdraw = (fields(line) for line in seg.lines)
    assert len(announce) == len(withdraw) == 17
    # The header time is 0 (not sane): the receive time stands in for it.
    assert announce[:9] == ["0", "1700000000.500000", "1700000000.500000", "0", "10.0.0.0/8",
                            "10.0.0.0/8", "0", NULL, "f"]
    assert withdraw[8] == "t" and withdraw[9] == NULL  # no attribute set
    # The attribute set is a line of its own, named by its digest.
    (attr_line,) = seg.attrs
    attr = fields(attr_line)
    assert len(attr) == 14 and attr[0] == announce[9]
    assert attr[1:8] == ["192.0.2.1", "igp", "{65001,65100}", "65100", "5", NULL, "{65001:1}"]
    assert batch.route_count == 2 and batch.days == frozenset({1700000000 // 86400})
    assert seg.scopes == {("10.0.0.1", "192.0.2.1", "0", "adj_in_pre", "ipv4_unicast", 65001): 0}


def test_generations_and_barriers(bmp_events):
    ev = bmp_events
    builder = BatchBuilder(max_gen=3)
    peer = ev.peer()
    p = ["10.0.0.0/8"]
    builder.add_events("r", [ev.announce(peer, p), ev.withdraw(peer, p), ev.announce(peer, p),
                             ev.peer_up(peer),
                             ev.announce(peer, p),  # 4th occurrence: a new segment
                             ev.peer_down(peer),
                             ev.announce(peer, p)])
    batch = builder.take()
    kinds = [type(part).__name__ if isinstance(part, Segment) else part.kind
             for part in batch.parts]
    assert kinds == ["Segment", "Segment", "peer_up", "peer_down", "Segment"]
    gens = [[int(line.split("\t", 1)[0]) for line in part.lines]
            for part in batch.parts if isinstance(part, Segment)]
    assert gens == [[0, 1, 2], [0], [0]]
    assert [part.max_gen for part in batch.parts if isinstance(part, Segment)] == [2, 0, 0]
    assert all(isinstance(part, (Segment, Op)) for part in batch.parts)


def test_generations_follow_the_database_key(bmp_events):
    """Add-Path ids make distinct keys; a path id of 0 is the key of a route without
    one (the database's path_id is 0 then); other scopes and families are apart."""
    ev = bmp_events
    Nlri = ev.bgp.Nlri
    builder = BatchBuilder()
    peer = ev.peer()
    p = "10.0.0.0/8"
    builder.add_events("r", [
        ev.announce(peer, [], nlri=(Nlri(p, 1), Nlri(p, 2))),
        ev.announce(peer, [p]),
        ev.announce(peer, [], nlri=(Nlri(p, 0),)),  # the same key as the line before
        ev.announce(peer, [], nlri=(Nlri(p, 2),)),
        ev.announce(ev.peer(post_policy=True), [p]),  # another RIB view
        ev.announce(peer, ["2001:db8::/32"], family="ipv6_unicast"),
    ])
    (seg,) = builder.take().parts
    assert [(f[0], f[4], f[6]) for f in map(fields, seg.lines)] == [
        ("0", p, "1"), ("0", p, "2"), ("0", p, "0"), ("1", p, "0"), ("1", p, "2"),
        ("0", p, "0"), ("0", "2001:db8::/32", "0")]
    assert seg.max_gen == 1


def test_end_of_rib_is_an_operation(bmp_events):
    ev = bmp_events
    builder = BatchBuilder()
    builder.add_events("r", [ev.announce(ev.peer(post_policy=True), ["10.0.0.0/8"]),
                             ev.end_of_rib(ev.peer(post_policy=True), "ipv6_unicast")])
    seg, eor = builder.take().parts
    assert eor.kind == "end_of_rib"
    assert abs(eor.data.pop("received") - time.time()) < 60
    assert eor.data == {"peer_ip": "192.0.2.1", "peer_rd": "0", "rib": "adj_in_post",
                        "afi_safi": "ipv6_unicast"}


def test_rebuilding_from_items_gives_the_same_lines(bmp_events):
    ev = bmp_events
    builder = BatchBuilder()
    builder.add_connect("r", 5.0)
    builder.add_events("r", [ev.announce(ev.peer(), ["10.0.0.0/8"])], 10.0)
    builder.add_disconnect("r", 20.0)
    batch = builder.take()
    again = BatchBuilder()
    for item in batch.items:
        again.add_item(item)
    copy = again.take()
    assert [getattr(p, "lines", p) for p in copy.parts] == \
        [getattr(p, "lines", p) for p in batch.parts]


def test_stored_attribute_sets_are_sent_again_after_an_hour(bmp_events):
    """So that the database sees a set in use refreshed (route_attrs.last_sent)."""
    ev = bmp_events
    now = [0.0]
    builder = BatchBuilder(clock=lambda: now[0])
    peer = ev.peer()

    def carried(prefix):
        builder.add_events("r", [ev.announce(peer, [prefix])], 1700000000.0)
        batch = builder.take()
        builder.confirm(batch)
        return sum(len(part.attrs) for part in batch.parts)

    assert carried("10.0.0.0/8") == 1
    now[0] = 3599.0
    assert carried("11.0.0.0/8") == 0
    now[0] = 3600.0
    assert carried("12.0.0.0/8") == 0  # its confirmation, an hour on, forgets the set
    assert carried("13.0.0.0/8") == 1  # so it is sent again
    assert carried("14.0.0.0/8") == 0


def test_times_formatted_once_still_count_each_batch_day(bmp_events):
    """UPDATEs stamped alike share one formatted head; a new batch still learns
    the day of its first route, and another time gets its own text."""
    ev = bmp_events
    builder = BatchBuilder()
    at = 1700006399.25  # 0.75 s before midnight (UTC), read 1 s later
    day = int(at // 86400)
    peer = ev.peer(timestamp=at)
    for batch_number in range(2):
        builder.add_events("r", [ev.announce(peer, ["10.0.0.0/8"]),
                                 ev.announce(peer, ["11.0.0.0/8"])], at + 1)
        batch = builder.take()
        assert batch.days == frozenset({day, day + 1}), batch_number
        (seg,) = batch.parts
        assert [fields(line)[1:3] for line in seg.lines] == [
            ["1700006399.250000", "1700006400.250000"]] * 2
    later = ev.peer(timestamp=at + 0.5)
    builder.add_events("r", [ev.announce(peer, ["10.0.0.0/8"]),
                             ev.announce(later, ["11.0.0.0/8"])], at + 1)
    (seg,) = builder.take().parts
    assert [fields(line)[1:3] for line in seg.lines] == [
        ["1700006399.250000", "1700006400.250000"], ["1700006399.750000", "1700006400.250000"]]
