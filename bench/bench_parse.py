"""Parse-only benchmark: decode a synthetic full table with RouterSession.

Feeds the raw BMP stream made by bench/synth.py (1M IPv4 + 200k IPv6 unicast
routes by default) to ``pybmpmon.session.RouterSession.feed`` in 64 KiB chunks,
exactly as the collector does with socket reads, and reports messages, routes,
wall and CPU seconds, routes/s and peak RSS.  The decoded counts are compared
with what the generator put in the stream: a wrong count is a failure (exit 1),
not a fast result.

Run with ``make bench-parse`` or ``python3 bench/bench_parse.py [--small]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

import synth  # noqa: E402  (needs the path above)

SMALL = (40_000, 10_000)  # --small: 50k routes


def load_session_class():
    """RouterSession and DecodeFailure, or exit 2 with a clear message."""
    try:
        from pybmpmon import session
    except ImportError as exc:
        print(f"bench_parse: pybmpmon.session is not importable yet ({exc}); "
              "the benchmark needs RouterSession.feed()", file=sys.stderr)
        sys.exit(2)
    cls = getattr(session, "RouterSession", None)
    if cls is None:
        print("bench_parse: pybmpmon.session has no RouterSession yet", file=sys.stderr)
        sys.exit(2)
    return cls, getattr(session, "DecodeFailure", None)


def ensure_stream(v4: int, v6: int, seed: int, peers: int) -> tuple:
    """(path, expected counts); a missing stream is generated in a child process
    so that generating it does not count in this process's peak RSS."""
    path = synth.cache_path(v4, v6, seed, peers)
    if not (path.exists() and path.with_suffix(".json").exists()):
        print(f"generating {path.name} ...", flush=True)
        subprocess.run(
            [sys.executable, str(HERE / "synth.py"), "--quiet", "--v4", str(v4),
             "--v6", str(v6), "--seed", str(seed), "--peers", str(peers)],
            check=True, stdout=subprocess.DEVNULL)
    return synth.cached_stream(v4, v6, seed, peers)


def decode(path: Path, session_cls, failure_cls, chunk_size: int) -> dict:
    """Feed the file through one RouterSession and count what comes out."""
    from pybmpmon.bmp.model import RouteMonitoring

    session = session_cls()
    feed = session.feed
    messages = routes = withdrawn = end_of_rib = failures = 0
    per_type: Counter = Counter()
    per_family: Counter = Counter()
    first_failure = None
    with open(path, "rb", buffering=0) as f:
        read = f.read
        while True:
            chunk = read(chunk_size)
            if not chunk:
                break
            events = feed(chunk)
            messages += len(events)
            for event in events:
                cls = type(event)
                if cls is RouteMonitoring:
                    update = event.update
                    for rs in update.announced:
                        n = len(rs.nlri)
                        routes += n
                        per_family[rs.afi_safi] += n
                    for rs in update.withdrawn:
                        n = len(rs.nlri)
                        routes += n
                        withdrawn += n
                    if update.end_of_rib is not None:
                        end_of_rib += 1
                elif failure_cls is not None and cls is failure_cls:
                    failures += 1
                    if first_failure is None:
                        first_failure = event.error
                per_type[cls.__name__] += 1
    return {"messages": messages, "routes": routes, "withdrawn": withdrawn,
            "end_of_rib": end_of_rib, "failures": failures, "first_failure": first_failure,
            "per_type": per_type, "per_family": per_family}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true",
                        help=f"quick check: {SMALL[0]} IPv4 + {SMALL[1]} IPv6 routes")
    parser.add_argument("--v4", type=int, default=1_000_000)
    parser.add_argument("--v6", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per feed() call")
    parser.add_argument("--profile", action="store_true",
                        help="run under cProfile and print the top 25 functions (slower)")
    args = parser.parse_args(argv)
    v4, v6 = SMALL if args.small else (args.v4, args.v6)

    session_cls, failure_cls = load_session_class()
    path, expected = ensure_stream(v4, v6, args.seed, args.peers)
    rss_before = rss_mb()

    profiler = cProfile.Profile() if args.profile else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    found = decode(path, session_cls, failure_cls, args.chunk)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0

    families = ", ".join(f"{k} {v}" for k, v in sorted(found["per_family"].items()))
    types = ", ".join(f"{k} {v}" for k, v in sorted(found["per_type"].items()))
    print(f"stream       {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"messages     {found['messages']}  ({types})")
    print(f"routes       {found['routes']}  ({families}; withdrawn {found['withdrawn']})")
    print(f"End-of-RIB   {found['end_of_rib']}")
    print(f"failures     {found['failures']}")
    print(f"wall         {wall:.2f} s")
    print(f"CPU          {cpu:.2f} s")
    note = "  (under cProfile)" if profiler else ""
    print(f"routes/s     {found['routes'] / wall:,.0f}{note}")
    print(f"peak RSS     {rss_mb():.1f} MB  (before decoding {rss_before:.1f} MB)")

    if profiler:
        print()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)

    problems = []
    for key in ("messages", "routes", "end_of_rib"):
        if found[key] != expected[key]:
            problems.append(f"{key}: decoded {found[key]}, stream holds {expected[key]}")
    if found["failures"]:
        problems.append(f"{found['failures']} messages failed to decode, first: "
                        f"{found['first_failure']}")
    for problem in problems:
        print(f"MISMATCH     {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
