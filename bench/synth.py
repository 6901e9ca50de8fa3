"""A synthetic full BGP table as a raw BMP stream, for benchmarks.

The stream is what a router would send a monitoring station right after it
connects: an Initiation (RFC 7854 §4.3), then per monitored peer a Peer Up
(§4.10) carrying both OPENs (RFC 4271 §4.2 with RFC 5492 capabilities:
multiprotocol IPv4/IPv6 unicast, RFC 6793 4-octet AS, route refresh), that
peer's whole table as Route Monitoring messages (§4.6) holding BGP UPDATEs
(RFC 4271 §4.3; IPv6 in MP_REACH_NLRI, RFC 4760 §3), and an End-of-RIB per
family (RFC 4724 §2).

What makes it a realistic load:

- prefix lengths as in a real table: IPv4 mostly /24, then /22-/23, /16-/21
  and a few shorter; IPv6 mostly /48 and /32-/44;
- ~2.5 prefixes per UPDATE on average with a long tail (many UPDATEs with one
  prefix, some with 10-50);
- attributes: ORIGIN, AS_PATH of 2-8 4-octet ASNs (16-bit, 32-bit and
  4200000000+ private ones, prepends, rare AS_SETs), NEXT_HOP or the
  MP_REACH next hop (global, often with a link-local), MED, LOCAL_PREF,
  ATOMIC_AGGREGATE, AGGREGATOR, 0-6 COMMUNITIES, LARGE_COMMUNITIES;
- attribute sharing: UPDATEs draw their attribute set from a pool of one set
  per 8 routes (150k for the full table) with a skewed distribution (a few
  sets are very common, most are rare).

Strategy: this module is deliberately independent of pybmpmon (its own tiny
encoders), so a decoder bug cannot hide by being mirrored in the generator.
Output is deterministic for given parameters (one seeded ``random.Random``),
and cached under var/bench/ with a JSON file of the expected counts.

Usage: ``python3 bench/synth.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path

# Bump when the output for the same parameters changes: it keys the cache.
GENERATOR_VERSION = 2

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "var" / "bench"

# One distinct attribute set per this many routes: 150k for the full table.
ROUTES_PER_ATTRIBUTE_SET = 8
MAX_GROUP = 50
BASE_TIME = 1_700_000_000  # per-peer header timestamps start here

MARKER = b"\xff" * 16
AS_TRANS = 23456

# IPv4 prefix length -> share of the table.  Short prefixes get tiny shares
# because there are few of them (2^L possible /L prefixes).
V4_LENGTHS = {
    8: 0.00002, 9: 0.00004, 10: 0.0001, 11: 0.0002, 12: 0.0005, 13: 0.001,
    14: 0.002, 15: 0.003, 16: 0.03, 17: 0.015, 18: 0.025, 19: 0.035,
    20: 0.045, 21: 0.045, 22: 0.11, 23: 0.09, 24: 0.59,
}
V6_LENGTHS = {
    19: 0.0005, 20: 0.001, 24: 0.002, 28: 0.004, 29: 0.02, 30: 0.005,
    31: 0.005, 32: 0.13, 33: 0.01, 34: 0.01, 35: 0.01, 36: 0.03, 37: 0.005,
    38: 0.01, 39: 0.01, 40: 0.06, 41: 0.01, 42: 0.02, 43: 0.02, 44: 0.08,
    45: 0.02, 46: 0.03, 47: 0.03, 48: 0.43, 56: 0.005, 64: 0.005,
}
V4_BAD_FIRST_OCTET = frozenset([0, 10, 127] + list(range(224, 256)))

# Prefixes per UPDATE: P(k) ~ k^-2.08 for k in 1..50 gives a mean near 2.5,
# about 60% single-prefix UPDATEs and a few dozen-prefix ones.
GROUP_SIZES = list(range(1, MAX_GROUP + 1))
GROUP_CUM = list(accumulate(k ** -2.08 for k in GROUP_SIZES))

PATH_LENGTHS = [2, 3, 4, 5, 6, 7, 8]
PATH_LENGTH_CUM = list(accumulate([0.08, 0.25, 0.28, 0.20, 0.10, 0.06, 0.03]))
COMMUNITY_COUNTS = [0, 1, 2, 3, 4, 5, 6]
COMMUNITY_COUNT_CUM = list(accumulate([0.30, 0.15, 0.15, 0.12, 0.10, 0.09, 0.09]))

# The path attribute type codes used here (RFC 4271 §5, RFC 1997, RFC 4760, RFC 8092).
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF = 1, 2, 3, 4, 5
ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES = 6, 7, 8
MP_REACH, MP_UNREACH, LARGE_COMMUNITIES = 14, 15, 32
OPTIONAL, TRANSITIVE, EXTENDED = 0x80, 0x40, 0x10

_pack_header = struct.Struct(">BIB").pack  # BMP common header: version, length, type
_pack_bgp = struct.Struct(">HB").pack  # BGP header after the marker: length, type
_pack_ts = struct.Struct(">II").pack
_pack_h = struct.Struct(">H").pack
_pack_i = struct.Struct(">I").pack


# ---------------------------------------------------------------- encoders


def attribute(flags: int, code: int, value: bytes) -> bytes:
    """One path attribute TLV (RFC 4271 §4.3), extended length when asked or needed."""
    if flags & EXTENDED or len(value) > 255:
        return struct.pack(">BBH", flags | EXTENDED, code, len(value)) + value
    return struct.pack(">BBB", flags, code, len(value)) + value


def bgp_message(msg_type: int, body: bytes) -> bytes:
    return MARKER + _pack_bgp(19 + len(body), msg_type) + body


def bmp_message(msg_type: int, body: bytes) -> bytes:
    return _pack_header(3, 6 + len(body), msg_type) + body


def info_tlv(tlv_type: int, text: str) -> bytes:
    value = text.encode()
    return struct.pack(">HH", tlv_type, len(value)) + value


def ip4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def bgp_open(asn: int, bgp_id: bytes, hold_time: int) -> bytes:
    """OPEN with multiprotocol IPv4/IPv6 unicast, route refresh and 4-octet AS."""
    caps = (
        b"\x01\x04\x00\x01\x00\x01"  # multiprotocol AFI 1 SAFI 1
        + b"\x01\x04\x00\x02\x00\x01"  # multiprotocol AFI 2 SAFI 1
        + b"\x02\x00"  # route refresh
        + b"\x41\x04" + _pack_i(asn)  # 4-octet AS
    )
    params = bytes((2, len(caps))) + caps
    my_as = asn if asn <= 0xFFFF else AS_TRANS
    body = struct.pack(">BHH", 4, my_as, hold_time) + bgp_id + bytes((len(params),)) + params
    return bgp_message(1, body)


class Peer:
    """One monitored BGP peer of the synthetic router."""

    def __init__(self, index: int):
        self.index = index
        self.address = ip4(f"192.0.2.{index + 1}")
        self.asn = (64496, 65536, 4200000001)[index % 3] + index // 3
        self.bgp_id = ip4(f"198.51.100.{index + 1}")
        # Peer type 0 (global), no flags: IPv4 peer, pre-policy, 4-octet AS_PATH.
        self.header_prefix = (
            bytes((0, 0)) + bytes(8) + bytes(12) + self.address + _pack_i(self.asn) + self.bgp_id
        )
        self.next_hops_v4 = [self.address] + [ip4(f"203.0.113.{i}") for i in (1, 2, 3)]
        base = 0x20010DB8 << 96
        self.next_hops_v6 = [
            (base | (index + 1) << 16 | i).to_bytes(16, "big") for i in range(4)
        ]
        self.link_local = (0xFE80 << 112 | 0x0200_5EFF_FE00_0000 | index + 1).to_bytes(16, "big")

    def header(self, seq: int) -> bytes:
        """The 42-octet per-peer header (RFC 7854 §4.2); time moves with ``seq``."""
        return self.header_prefix + _pack_ts(BASE_TIME + seq // 10_000, (seq % 10_000) * 100)


LOCAL_ASN = 64511
LOCAL_ADDRESS = ip4("192.0.2.254")
LOCAL_BGP_ID = ip4("192.0.2.254")


def initiation() -> bytes:
    body = info_tlv(1, "pybmpmon synthetic full table") + info_tlv(2, "synth-router")
    return bmp_message(4, body)


def peer_up(peer: Peer) -> bytes:
    body = (
        peer.header(0)
        + bytes(12) + LOCAL_ADDRESS
        + _pack_h(179) + _pack_h(40000 + peer.index)
        + bgp_open(LOCAL_ASN, LOCAL_BGP_ID, 180)
        + bgp_open(peer.asn, peer.bgp_id, 90)
    )
    return bmp_message(3, body)


# ---------------------------------------------------------------- tables


def _prefixes(rng: random.Random, count: int, width: int, lengths: dict) -> list:
    """``count`` distinct prefixes as NLRI bytes (length octet + address), sorted.

    Collisions are redrawn whole (length and address) so an exhausted short
    length cannot loop forever.
    """
    lens = list(lengths)
    cum = list(accumulate(lengths.values()))
    total = cum[-1]
    getrandbits = rng.getrandbits
    rand = rng.random
    keys: set = set()
    while len(keys) < count:
        for _ in range(count - len(keys)):
            plen = lens[bisect_right(cum, rand() * total)]
            addr = getrandbits(width) & ~((1 << (width - plen)) - 1)
            if width == 32:
                if (addr >> 24) in V4_BAD_FIRST_OCTET:
                    continue
            else:
                addr = addr & ((1 << 125) - 1) | (1 << 125)  # 2000::/3
            keys.add(addr << 8 | plen)
    result = []
    nbytes = width // 8
    for key in sorted(keys):
        plen = key & 0xFF
        result.append(bytes((plen,)) + (key >> 8).to_bytes(nbytes, "big")[: (plen + 7) // 8])
    return result


class AttributePool:
    """Attribute sets for one peer, made on first use and then reused.

    ``draw()`` returns a pool index with a skewed distribution: index
    ``floor(N * u^2)`` makes low indexes common and high ones rare, as in a
    real table where a few paths carry many prefixes.
    """

    def __init__(self, rng: random.Random, peer: Peer, size: int):
        self.rng = rng
        self.peer = peer
        self.size = size
        self.profiles: dict = {}
        self.v4_blocks: dict = {}
        self.v6_blocks: dict = {}
        # Transit networks seen in the middle of paths: a small, fixed set.
        self.transit = [rng.choice((rng.randint(1, 64495), rng.randint(131072, 400000)))
                        for _ in range(60)]

    def draw(self) -> int:
        u = self.rng.random()
        return int(self.size * u * u)

    def _asn(self) -> int:
        r = self.rng.random()
        if r < 0.64:
            return self.rng.randint(1, 64495)
        if r < 0.98:
            return self.rng.randint(131072, 401308)
        return self.rng.randint(4200000000, 4294967294)

    def profile(self, idx: int) -> tuple:
        """(attributes before NEXT_HOP, attributes after it, next hop index)."""
        found = self.profiles.get(idx)
        if found is not None:
            return found
        rng = self.rng
        rand = rng.random
        n = PATH_LENGTHS[bisect_right(PATH_LENGTH_CUM, rand() * PATH_LENGTH_CUM[-1])]
        origin_as = self._asn()
        path = [self.peer.asn]
        path += [rng.choice(self.transit) for _ in range(n - 2)]
        path.append(origin_as)
        if rand() < 0.10 and len(path) < 8:  # origin prepending
            path += [origin_as] * min(8 - len(path), rng.randint(1, 3))
        segments = bytes((2, len(path))) + struct.pack(f">{len(path)}I", *path)
        aggregated = rand() < 0.005
        if aggregated:  # an aggregate that kept the contributors as an AS_SET
            members = sorted({self._asn() for _ in range(rng.randint(2, 4))})
            segments += bytes((1, len(members))) + struct.pack(f">{len(members)}I", *members)
        r = rand()
        origin = 0 if r < 0.85 else (2 if r < 0.99 else 1)
        before = attribute(TRANSITIVE, ORIGIN, bytes((origin,)))
        before += attribute(TRANSITIVE, AS_PATH, segments)
        after = b""
        if rand() < 0.30:
            after += attribute(OPTIONAL, MED, _pack_i(rng.randint(0, 1000)))
        if rand() < 0.20:
            after += attribute(TRANSITIVE, LOCAL_PREF, _pack_i(rng.choice((80, 100, 120, 200))))
        if aggregated or rand() < 0.02:
            after += attribute(TRANSITIVE, ATOMIC_AGGREGATE, b"")
        if aggregated or rand() < 0.03:
            agg_ip = _pack_i(rng.getrandbits(32))
            after += attribute(OPTIONAL | TRANSITIVE, AGGREGATOR, _pack_i(origin_as) + agg_ip)
        pick = rand() * COMMUNITY_COUNT_CUM[-1]
        ncomm = COMMUNITY_COUNTS[bisect_right(COMMUNITY_COUNT_CUM, pick)]
        if ncomm:
            owners = [a for a in self.transit if a <= 0xFFFF] or [64496]
            comms = sorted({(rng.choice(owners) << 16) | rng.getrandbits(16) for _ in range(ncomm)})
            after += attribute(
                OPTIONAL | TRANSITIVE, COMMUNITIES, struct.pack(f">{len(comms)}I", *comms)
            )
        large = b""
        if rand() < 0.10:
            for _ in range(rng.randint(1, 3)):
                large += struct.pack(">III", rng.choice((origin_as, self.peer.asn)),
                                     rng.getrandbits(16), rng.getrandbits(16))
            large = attribute(OPTIONAL | TRANSITIVE, LARGE_COMMUNITIES, large)
        nh = 0 if rand() < 0.7 else rng.randint(1, 3)
        result = (before, after, large, nh)
        self.profiles[idx] = result
        return result

    def v4(self, idx: int) -> bytes:
        """The whole attribute block of an IPv4 UPDATE, in type-code order."""
        block = self.v4_blocks.get(idx)
        if block is None:
            before, after, large, nh = self.profile(idx)
            block = (before + attribute(TRANSITIVE, NEXT_HOP, self.peer.next_hops_v4[nh])
                     + after + large)
            self.v4_blocks[idx] = block
        return block

    def v6(self, idx: int) -> tuple:
        """(MP_REACH value prefix up to the NLRI, the other attributes)."""
        found = self.v6_blocks.get(idx)
        if found is None:
            before, after, large, nh = self.profile(idx)
            next_hop = self.peer.next_hops_v6[nh]
            if nh == 0:  # eBGP from the peer itself: global + link-local
                next_hop += self.peer.link_local
            reach = b"\x00\x02\x01" + bytes((len(next_hop),)) + next_hop + b"\x00"
            found = (reach, before + after + large)
            self.v6_blocks[idx] = found
        return found


# ---------------------------------------------------------------- stream


def _group_sizes(rng: random.Random, total: int) -> list:
    sizes = []
    left = total
    while left > 0:
        batch = rng.choices(GROUP_SIZES, cum_weights=GROUP_CUM, k=max(16, left // 2))
        for k in batch:
            if k > left:
                k = left
            sizes.append(k)
            left -= k
            if not left:
                break
    return sizes


def iter_chunks(v4: int = 1_000_000, v6: int = 200_000, seed: int = 1, peers: int = 1,
                stats: dict | None = None, chunk_size: int = 1 << 20):
    """Yield the stream as byte chunks of about ``chunk_size`` octets.

    If ``stats`` is a dict it is filled with the expected counts (see
    :func:`expected_counts`) once the generator is exhausted.
    """
    rng = random.Random(seed)
    v4_prefixes = _prefixes(rng, v4, 32, V4_LENGTHS)
    v6_prefixes = _prefixes(rng, v6, 128, V6_LENGTHS)
    counts = {
        "messages": 0, "initiation": 1, "peer_up": peers, "route_monitoring": 0,
        "updates_with_routes": 0, "end_of_rib": 0, "routes": 0,
        "announced": {"ipv4_unicast": 0, "ipv6_unicast": 0}, "withdrawn": 0,
        "max_prefixes_per_update": 0, "distinct_attribute_sets": 0, "bytes": 0,
    }
    out = [initiation()]
    size = len(out[0])
    seq = 0
    join = b"".join
    for p in range(peers):
        peer = Peer(p)
        pool_size = max(100, (v4 + v6) // ROUTES_PER_ATTRIBUTE_SET)
        pool = AttributePool(random.Random(rng.getrandbits(64)), peer, pool_size)
        draw = pool.draw
        header = peer.header
        msg = peer_up(peer)
        out.append(msg)
        size += len(msg)
        for family, prefixes in (("ipv4_unicast", v4_prefixes), ("ipv6_unicast", v6_prefixes)):
            pos = 0
            for k in _group_sizes(rng, len(prefixes)):
                nlri = join(prefixes[pos:pos + k])
                pos += k
                idx = draw()
                if family == "ipv4_unicast":
                    attrs = pool.v4(idx)
                    body = b"\x00\x00" + _pack_h(len(attrs)) + attrs + nlri
                else:
                    reach, rest = pool.v6(idx)
                    # MP_REACH_NLRI first, as FRR and others send it.
                    attrs = attribute(OPTIONAL | EXTENDED, MP_REACH, reach + nlri) + rest
                    body = b"\x00\x00" + _pack_h(len(attrs)) + attrs
                bgp = MARKER + _pack_bgp(19 + len(body), 2) + body
                msg = _pack_header(3, 48 + len(bgp), 0) + header(seq) + bgp
                seq += 1
                out.append(msg)
                size += len(msg)
                if k > counts["max_prefixes_per_update"]:
                    counts["max_prefixes_per_update"] = k
                counts["updates_with_routes"] += 1
                if size >= chunk_size:
                    chunk = join(out)
                    counts["bytes"] += len(chunk)
                    yield chunk
                    out = []
                    size = 0
            counts["announced"][family] += len(prefixes)
            # End-of-RIB (RFC 4724 §2): empty UPDATE for IPv4, lone MP_UNREACH otherwise.
            if family == "ipv4_unicast":
                body = b"\x00\x00\x00\x00"
            else:
                unreach = attribute(OPTIONAL, MP_UNREACH, b"\x00\x02\x01")
                body = b"\x00\x00" + _pack_h(len(unreach)) + unreach
            msg = bmp_message(0, header(seq) + bgp_message(2, body))
            seq += 1
            out.append(msg)
            size += len(msg)
            counts["end_of_rib"] += 1
        counts["distinct_attribute_sets"] += len(pool.profiles)
    if out:
        chunk = join(out)
        counts["bytes"] += len(chunk)
        yield chunk
    counts["route_monitoring"] = counts["updates_with_routes"] + counts["end_of_rib"]
    counts["messages"] = 1 + peers + counts["route_monitoring"]
    counts["routes"] = sum(counts["announced"].values())
    if stats is not None:
        stats.update(counts)
        stats["parameters"] = {"v4": v4, "v6": v6, "seed": seed, "peers": peers,
                               "generator_version": GENERATOR_VERSION}


def generate(v4: int = 1_000_000, v6: int = 200_000, seed: int = 1, peers: int = 1) -> bytes:
    """The whole stream in memory."""
    return b"".join(iter_chunks(v4, v6, seed, peers))


def write_stream(path, v4: int = 1_000_000, v6: int = 200_000, seed: int = 1,
                 peers: int = 1) -> dict:
    """Write the stream to ``path`` (atomically) and its counts beside it as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        for chunk in iter_chunks(v4, v6, seed, peers, stats):
            f.write(chunk)
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return stats


def cache_path(v4: int = 1_000_000, v6: int = 200_000, seed: int = 1, peers: int = 1,
               directory=None) -> Path:
    name = f"synth-v4_{v4}-v6_{v6}-seed{seed}-peers{peers}-g{GENERATOR_VERSION}.bmp"
    return Path(directory or CACHE_DIR) / name


def cached_stream(v4: int = 1_000_000, v6: int = 200_000, seed: int = 1, peers: int = 1,
                  directory=None) -> tuple:
    """(path, counts) of the cached stream, generating it first if needed."""
    path = cache_path(v4, v6, seed, peers, directory)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    return path, write_stream(path, v4, v6, seed, peers)


def expected_counts(v4: int = 1_000_000, v6: int = 200_000, seed: int = 1,
                    peers: int = 1) -> dict:
    """What a decoder must find in the stream: messages per type, routes per family.

    Keys: messages, initiation, peer_up, route_monitoring (UPDATEs with routes
    plus End-of-RIB markers), updates_with_routes, end_of_rib, routes,
    announced {family: n}, withdrawn, max_prefixes_per_update,
    distinct_attribute_sets, bytes.
    """
    return cached_stream(v4, v6, seed, peers)[1]


# ---------------------------------------------------------------- self-check


def check_stream(data: bytes) -> dict:
    """Walk the stream with a minimal independent reader and count what it holds.

    Checks the framing (version 3, lengths adding up to the end), the BGP
    marker and lengths, and counts routes by walking NLRI prefix lengths.
    """
    counts = {"messages": 0, "route_monitoring": 0, "routes": 0, "end_of_rib": 0,
              "types": {}}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 6:
            raise ValueError(f"truncated common header at {pos}")
        version, length, msg_type = struct.unpack_from(">BIB", data, pos)
        if version != 3 or length < 6 or pos + length > end:
            raise ValueError(f"bad common header at {pos}: {version} {length} {msg_type}")
        counts["messages"] += 1
        counts["types"][msg_type] = counts["types"].get(msg_type, 0) + 1
        if msg_type == 0:
            counts["route_monitoring"] += 1
            bgp = pos + 48
            if data[bgp:bgp + 16] != MARKER:
                raise ValueError(f"bad BGP marker at {bgp}")
            blen, btype = struct.unpack_from(">HB", data, bgp + 16)
            if btype != 2 or bgp + blen != pos + length:
                raise ValueError(f"bad BGP UPDATE header at {bgp}")
            routes = _count_update(data, bgp + 19, bgp + blen)
            if routes == 0:
                counts["end_of_rib"] += 1
            counts["routes"] += routes
        pos += length
    return counts


def _count_nlri(data: bytes, pos: int, end: int, width: int) -> int:
    n = 0
    while pos < end:
        plen = data[pos]
        if plen > width:
            raise ValueError(f"bad prefix length {plen} at {pos}")
        pos += 1 + (plen + 7) // 8
        n += 1
    if pos != end:
        raise ValueError(f"NLRI overruns its field at {end}")
    return n


def _count_update(data: bytes, pos: int, end: int) -> int:
    (wlen,) = struct.unpack_from(">H", data, pos)
    pos += 2 + wlen
    (alen,) = struct.unpack_from(">H", data, pos)
    pos += 2
    attrs_end = pos + alen
    routes = _count_nlri(data, attrs_end, end, 32)
    while pos < attrs_end:
        flags, code = data[pos], data[pos + 1]
        if flags & EXTENDED:
            (vlen,) = struct.unpack_from(">H", data, pos + 2)
            pos += 4
        else:
            vlen = data[pos + 2]
            pos += 3
        if code == MP_REACH:
            nh_len = data[pos + 3]
            routes += _count_nlri(data, pos + 5 + nh_len, pos + vlen, 128)
        pos += vlen
    if pos != attrs_end:
        raise ValueError(f"attributes overrun at {attrs_end}")
    return routes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate (and cache) a synthetic full BGP table as a raw BMP stream.")
    parser.add_argument("--v4", type=int, default=1_000_000, help="IPv4 unicast prefixes")
    parser.add_argument("--v6", type=int, default=200_000, help="IPv6 unicast prefixes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peers", type=int, default=1, help="monitored peers, each "
                        "sending the whole table")
    parser.add_argument("--out", help="write here instead of the cache under var/bench/")
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    parser.add_argument("--check", action="store_true",
                        help="walk the written stream and compare with the expected counts")
    parser.add_argument("--quiet", action="store_true", help="print only the path")
    args = parser.parse_args(argv)
    if min(args.v4, args.v6) < 0 or args.peers < 1:
        parser.error("counts must be >= 0 and --peers >= 1")

    started = time.perf_counter()
    if args.out:
        path = Path(args.out)
        stats = write_stream(path, args.v4, args.v6, args.seed, args.peers)
    else:
        path = cache_path(args.v4, args.v6, args.seed, args.peers)
        if args.force and path.exists():
            path.unlink()
        path, stats = cached_stream(args.v4, args.v6, args.seed, args.peers)
    elapsed = time.perf_counter() - started
    if args.quiet:
        print(path)
    else:
        print(f"{path}  ({stats['bytes'] / 1e6:.1f} MB, {elapsed:.1f} s)")
        print(json.dumps({k: v for k, v in stats.items() if k != "parameters"}, sort_keys=True))
    if args.check:
        found = check_stream(path.read_bytes())
        problems = [key for key in ("messages", "route_monitoring", "routes", "end_of_rib")
                    if found[key] != stats[key]]
        if problems:
            print(f"check FAILED: found {found}, expected {stats}", file=sys.stderr)
            return 1
        print(f"check ok: {found['messages']} messages, {found['routes']} routes, "
              f"{found['end_of_rib']} End-of-RIB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
