"""``pybmpmon decode``: a capture as JSON lines, run as an operator runs it.

Most cases start ``python -m pybmpmon`` in a subprocess (exit status, stdout
and stderr exactly as a shell sees them); a few variations call
:func:`pybmpmon.cli.main` in-process.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pybmpmon.bgp.model import EMPTY_ATTRIBUTES, Nlri, RouteSet, Update
from pybmpmon.bmp.framer import Framer
from pybmpmon.bmp.model import Initiation, PeerHeader, RouteMonitoring, StatisticsReport
from pybmpmon.cli import Summary, build_parser, main

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PYBMPMON_CORPUS") or REPO.parent / "shared" / "corpus")
SMALL = CORPUS / "gobgp-pre-policy-small-1.bmp"
FRR = CORPUS / "frr-nosoftreconfig-small-1.bmp"


def run(*args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "pybmpmon", *map(str, args)],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def lines(result: subprocess.CompletedProcess) -> list:
    text = result.stdout.decode()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def messages_of(path: Path) -> list:
    return Framer().feed(path.read_bytes())


def manifest(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())["bmp_summary"][0]


@pytest.fixture(params=sorted(CORPUS.glob("*.bmp")), ids=lambda p: p.stem)
def capture(request):
    return request.param


def test_decode_capture(capture):
    result = run("decode", capture)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    out = lines(result)
    summary = manifest(capture)
    assert len(out) == summary["messages_total"]
    assert dict(Counter(obj["type"] for obj in out)) == summary["messages_by_type"]
    for obj in out:
        assert obj["type"] != "error"
        if obj["type"] not in ("initiation", "termination"):
            assert set(obj["peer"]) == {
                "peer_type",
                "flags",
                "distinguisher",
                "address",
                "asn",
                "bgp_id",
                "timestamp",
            }
        if obj["type"] == "route_monitoring":
            assert obj["rib"] in ("adj_in_pre", "adj_in_post", "loc_rib")
            assert isinstance(obj["attributes"], dict) and isinstance(obj["routes"], list)
            assert obj["routes"] or "end_of_rib" in obj
            for route in obj["routes"]:
                assert route["action"] in ("announce", "withdraw")
                assert route["afi_safi"] in ("ipv4_unicast", "ipv6_unicast", "evpn")
                assert ("next_hop" in route) == (route["action"] == "announce")
    routes = Counter()
    for obj in out:
        if obj["type"] == "route_monitoring":
            rib = {"adj_in_pre": "pre_policy", "adj_in_post": "post_policy", "loc_rib": "loc_rib"}[obj["rib"]]
            for route in obj["routes"]:
                family = "l2vpn_evpn" if route["afi_safi"] == "evpn" else route["afi_safi"]
                routes[(rib, f"{family}:{route['action']}")] += 1
    assert routes == Counter(
        {(view, key): n for view, counts in summary["prefixes_by_view"].items() for key, n in counts.items()}
    )


def test_decode_fields_of_one_capture():
    out = lines(run("decode", SMALL))
    assert out[0] == {
        "type": "initiation",
        "info": [
            {"type": 2, "name": "sys_name", "value": "gobgp-lab-mon"},
            {
                "type": 1,
                "name": "sys_descr",
                "value": "gobgpd version 3.10.0 (lab monitored router)",
            },
        ],
    }
    peer_up = out[1]
    assert peer_up["type"] == "peer_up"
    assert (peer_up["local_address"], peer_up["local_port"]) == ("127.0.0.3", 10179)
    assert peer_up["received_open"]["families"] == ["ipv4_unicast", "ipv6_unicast", "evpn"]
    assert {c["name"] for c in peer_up["received_open"]["capabilities"]} >= {
        "four_octet_as",
        "multiprotocol",
        "fqdn",
    }
    first_route = next(obj for obj in out if obj["type"] == "route_monitoring")
    assert first_route["peer"]["address"] == "127.0.0.2" and first_route["rib"] == "adj_in_pre"
    # The manifest's 16.0.7.1/32: an AS_SET in the path, three communities, one route target.
    route = next(
        obj for obj in out if obj["type"] == "route_monitoring" and obj["routes"][0].get("prefix") == "16.0.7.1/32"
    )
    assert route["attributes"] == {
        "origin": "egp",
        "as_path": [65001, 65100, [65201, 65202]],
        "next_hop": "203.0.113.254",
        "med": 70,
        "communities": ["65001:100", "65001:200", "65535:666"],
        "ext_communities": ["rt:65001:7"],
    }
    assert route["routes"] == [
        {
            "action": "announce",
            "afi_safi": "ipv4_unicast",
            "prefix": "16.0.7.1/32",
            "next_hop": "203.0.113.254",
        }
    ]
    evpn = next(obj for obj in out if obj["type"] == "route_monitoring" and obj["routes"][0].get("route_type") == 2)
    assert evpn["routes"][0] == {
        "action": "announce",
        "afi_safi": "evpn",
        "rd": "192.0.2.1:100",
        "labels": [10100],
        "route_type": 2,
        "esi": "00:00:00:00:00:00:00:00:00:00",
        "ethernet_tag": 0,
        "mac": "aa:bb:cc:00:00:00",
        "ip": "10.100.0.1",
        "next_hop": "192.0.2.10",
    }
    stats = next(obj for obj in out if obj["type"] == "statistics_report")
    assert {s["name"] for s in stats["stats"]} == {
        "adj_rib_in_routes",
        "loc_rib_routes",
        "updates_treated_as_withdraw",
        "prefixes_treated_as_withdraw",
    }
    assert out[-1] == {
        "type": "termination",
        "info": [
            {
                "type": 1,
                "name": "reason",
                "value": 4,
                "reason_name": "permanently_administratively_closed",
            }
        ],
        "reason": 4,
        "reason_name": "permanently_administratively_closed",
    }


def test_stdin_gives_the_same_lines():
    from_file = run("decode", FRR)
    from_stdin = run("decode", "-", stdin=FRR.read_bytes())
    assert from_stdin.returncode == 0
    assert from_stdin.stdout == from_file.stdout
    assert len(lines(from_stdin)) == manifest(FRR)["messages_total"]


def test_summary(capture):
    result = run("decode", "--summary", capture)
    assert result.returncode == 0
    (out,) = lines(result)
    want = manifest(capture)
    assert out["type"] == "summary"
    assert (out["messages"], out["bytes"], out["errors"]) == (
        want["messages_total"],
        want["bytes"],
        0,
    )
    assert out["messages_by_type"] == want["messages_by_type"]
    views = {"pre_policy": "adj_in_pre", "post_policy": "adj_in_post", "loc_rib": "loc_rib"}
    assert out["route_monitoring_by_rib"] == {views[v]: n for v, n in want["route_monitoring_by_view"].items()}
    routes = {}
    for view, counts in want["prefixes_by_view"].items():
        for key, n in counts.items():
            family, action = key.split(":")
            family = "evpn" if family == "l2vpn_evpn" else family
            routes.setdefault(views[view], {}).setdefault(family, {})[action] = n
    assert out["routes_by_rib"] == routes
    assert out["end_of_rib_by_rib"] == {}
    assert out["peers"] == len(want["peers"])
    assert out["first_errors"] == []


def _corrupt(path: Path, tmp_path: Path, index: int, at: int, value: int) -> tuple:
    """A copy of *path* with byte *at* of message *index* set to *value*: (file, message offset, message)."""
    messages = messages_of(path)
    offset = sum(len(m) for m in messages[:index])
    data = bytearray(path.read_bytes())
    data[offset + at] = value
    bad = tmp_path / "bad.bmp"
    bad.write_bytes(bytes(data))
    return bad, offset, bytes(data[offset : offset + len(messages[index])])


def test_content_error_is_reported_and_decoding_goes_on(tmp_path):
    messages = messages_of(SMALL)
    index = next(i for i, m in enumerate(messages) if m[5] == 0 and i > 5)  # a route monitoring message
    # Byte 48 is the first byte of the BGP marker (6 common + 42 per-peer header octets).
    bad, offset, raw = _corrupt(SMALL, tmp_path, index, 48, 0x00)
    result = run("decode", bad)
    assert result.returncode == 1
    out = lines(result)
    assert len(out) == len(messages)  # one line per message, the bad one included
    errors = [obj for obj in out if obj["type"] == "error"]
    assert len(errors) == 1
    error = errors[0]
    assert out.index(error) == index
    assert error["offset"] == offset
    assert error["hex"] == raw.hex()
    assert "marker" in error["error"].lower()
    assert error["peer"]["address"] == "127.0.0.2"
    assert out[-1]["type"] == "termination"  # decoding went on to the end


def test_content_errors_in_summary(tmp_path):
    messages = messages_of(SMALL)
    index = next(i for i, m in enumerate(messages) if m[5] == 0 and i > 5)
    bad, offset, _raw = _corrupt(SMALL, tmp_path, index, 48, 0x00)
    result = run("decode", "--summary", bad)
    assert result.returncode == 1
    (out,) = lines(result)
    assert out["errors"] == 1 and out["messages"] == len(messages) - 1
    assert out["first_errors"][0]["offset"] == offset
    assert "hex" not in out["first_errors"][0]


@pytest.mark.parametrize(
    "at, value, words",
    [
        (0, 1, "version 1"),  # BMP version
        (1, 0xFF, "exceeds"),  # message length far beyond the maximum
        (4, 0x02, "below"),  # length 2 (the first three length octets are zero)
    ],
)
def test_framing_error_stops(tmp_path, at, value, words):
    index = 10
    bad, offset, _raw = _corrupt(SMALL, tmp_path, index, at, value)
    result = run("decode", bad)
    assert result.returncode == 1
    out = lines(result)
    assert len(out) == index + 1  # the messages before it, then the error, then nothing
    assert [obj["type"] for obj in out[:index]] == [obj["type"] for obj in lines(run("decode", SMALL))[:index]]
    error = out[-1]
    assert error["type"] == "error" and error["error_type"] == "FramingError"
    assert error["offset"] == offset
    assert words in error["error"]
    data = SMALL.read_bytes()
    assert error["hex"] == bytes([*data[offset : offset + at], value, *data[offset + at + 1 : offset + 64]]).hex()


def test_truncated_file(tmp_path):
    data = SMALL.read_bytes()
    messages = messages_of(SMALL)
    whole = sum(len(m) for m in messages[:20])
    for cut, complete in ((whole + 3, 20), (whole + 30, 20), (whole, 20)):
        path = tmp_path / "cut.bmp"
        path.write_bytes(data[:cut])
        result = run("decode", path)
        out = lines(result)
        if cut == whole:
            assert result.returncode == 0 and len(out) == complete
            continue
        assert result.returncode == 1
        assert len(out) == complete + 1
        assert out[-1]["type"] == "error" and out[-1]["offset"] == whole
        assert "ends inside" in out[-1]["error"]
        assert out[-1]["hex"] == data[whole:cut].hex()


def test_max_message_size():
    largest = manifest(SMALL)["largest_message_bytes"]
    assert run("decode", "--max-message-size", largest, SMALL).returncode == 0
    result = run("decode", "--max-message-size", largest - 1, SMALL)
    assert result.returncode == 1
    assert lines(result)[-1]["error_type"] == "FramingError"
    assert run("decode", "--max-message-size", "3", SMALL).returncode == 2  # argparse: below the header size


def test_missing_file(tmp_path):
    result = run("decode", tmp_path / "nope.bmp")
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"nope.bmp" in result.stderr and b"Traceback" not in result.stderr


def test_directory_is_not_a_capture(tmp_path):
    result = run("decode", tmp_path)
    assert result.returncode == 2 and b"Traceback" not in result.stderr


def test_empty_input():
    result = run("decode", "-", stdin=b"")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    (summary,) = lines(run("decode", "--summary", "-", stdin=b""))
    assert summary["messages"] == 0 and summary["errors"] == 0


def test_not_bmp_at_all():
    result = run("decode", "-", stdin=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert result.returncode == 1
    (error,) = lines(result)
    assert error["offset"] == 0 and error["error_type"] == "FramingError"
    assert error["hex"].startswith(b"GET / ".hex())


def test_reader_going_away_is_not_an_error():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    big = CORPUS / "gobgp-all-1.bmp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pybmpmon", "decode", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert json.loads(first)["type"] == "initiation"
    assert b"Traceback" not in stderr


def test_in_process_main(capsys):
    assert main(["decode", str(FRR)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == manifest(FRR)["messages_total"]


def test_unknown_bmp_message_type_is_an_error_and_decoding_goes_on(capsys, tmp_path):
    data = SMALL.read_bytes()
    odd = struct.pack("!BIB", 3, 10, 42) + b"\x00\x01\x02\x03"
    path = tmp_path / "odd.bmp"
    path.write_bytes(odd + data)
    assert main(["decode", str(path)]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["type"] == "error" and out[0]["offset"] == 0 and out[0]["hex"] == odd.hex()
    assert len(out) == 1 + manifest(SMALL)["messages_total"]


# -- the rest of the command line -------------------------------------------------


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for command in ("serve", "migrate", "check", "decode", "replay"):
        assert command in text


@pytest.mark.parametrize(
    "command, words",
    [
        ("serve", "collector"),
        ("migrate", "migrations"),
        ("check", "database"),
        ("decode", "--summary"),
        ("replay", "HOST:PORT"),
    ],
)
def test_command_help(command, words):
    result = run(command, "--help")
    assert result.returncode == 0
    assert words in result.stdout.decode()


def test_parser_shapes():
    parser = build_parser()
    args = parser.parse_args(["replay", "x.bmp", "127.0.0.1:11019", "--rate", "100"])
    assert (args.command, args.file, args.target, args.rate) == (
        "replay",
        "x.bmp",
        "127.0.0.1:11019",
        100.0,
    )
    args = parser.parse_args(["decode", "-"])
    assert (args.file, args.summary, args.max_message_size) == ("-", False, 16 * 1024 * 1024)
    assert parser.parse_args([]).command is None  # main() runs serve


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.decode().startswith("pybmpmon ")


def _peer(flags=0, address="192.0.2.1"):
    return PeerHeader(0, flags, "0", IPv4Address(address), 65001, IPv4Address("10.0.0.1"), 1.0)


def _monitoring(header, announced=(), withdrawn=(), end_of_rib=None):
    return RouteMonitoring(header, Update(EMPTY_ATTRIBUTES, tuple(announced), tuple(withdrawn), end_of_rib))


def _v4(*prefixes):
    return RouteSet(1, 1, "ipv4_unicast", None, tuple(Nlri(p) for p in prefixes))


def test_summary_counter():
    summary = Summary(error_samples=1)
    pre, post = _peer(0x00), _peer(0x40)
    summary.add(Initiation(()), 20)
    summary.add(_monitoring(pre, announced=[_v4("10.0.0.0/8", "11.0.0.0/8")]), 100)
    summary.add(_monitoring(post, withdrawn=[_v4("10.0.0.0/8")]), 50)
    summary.add(_monitoring(post, announced=[RouteSet(1, 73, "afi1_safi73", None, (), raw=b"\x00")]), 40)
    summary.add(_monitoring(post, end_of_rib="evpn"), 30)
    summary.add(StatisticsReport(_peer(0, "192.0.2.2"), ()), 10)
    summary.add_error({"type": "error", "offset": 250, "error": "x", "hex": "00"}, 8)
    summary.add_error({"type": "error", "offset": 258, "error": "y", "hex": "00"}, 8)
    out = summary.as_dict()
    assert json.loads(json.dumps(out)) == out
    assert out == {
        "type": "summary",
        "messages": 6,
        "bytes": 266,
        "errors": 2,
        "messages_by_type": {"initiation": 1, "route_monitoring": 4, "statistics_report": 1},
        "route_monitoring_by_rib": {"adj_in_post": 3, "adj_in_pre": 1},
        "routes_by_rib": {
            "adj_in_post": {"afi1_safi73": {"announce_undecoded": 1}, "ipv4_unicast": {"withdraw": 1}},
            "adj_in_pre": {"ipv4_unicast": {"announce": 2}},
        },
        "end_of_rib_by_rib": {"adj_in_post": {"evpn": 1}},
        "peers": 2,
        "first_errors": [{"type": "error", "offset": 250, "error": "x"}],
    }
