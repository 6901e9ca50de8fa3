"""pybmpmon.logsetup: JSON lines (SPEC §6), text format, levels, field conventions."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import re
import subprocess
import sys
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pybmpmon.logsetup import JsonLineFormatter, setup_logging

ROOT = Path(__file__).resolve().parent.parent
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def stream():
    """Logging into a StringIO; the handler is removed afterwards."""
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = None

    def setup(level="DEBUG", fmt="json"):
        nonlocal handler
        handler = setup_logging(level, fmt, stream=buf)
        return buf

    yield setup
    if handler is not None:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_object_per_line_with_core_fields(stream):
    buf = stream("INFO")
    log = logging.getLogger("pybmpmon.collector")
    log.info("router_connected", extra={"router": "192.0.2.1", "port": 54321})
    log.warning("bmp_peer_down", extra={"router": "192.0.2.1", "peer": "192.0.2.100",
                                        "asn": 65001, "reason_code": 1})
    first, second = lines(buf)
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert first == {
        "timestamp": first["timestamp"],
        "level": "INFO",
        "logger": "pybmpmon.collector",
        "event": "router_connected",
        "router": "192.0.2.1",
        "port": 54321,
    }
    assert ISO_UTC.fullmatch(first["timestamp"])
    stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60
    assert second["level"] == "WARNING" and second["event"] == "bmp_peer_down"
    assert (second["asn"], second["reason_code"]) == (65001, 1)
    assert "message" not in first  # the event name is the whole message


def test_percent_args_render_and_event_is_the_name(stream):
    buf = stream()
    log = logging.getLogger("pybmpmon.collector")
    log.error("bmp_parse_error: %s (offset %d)", "bad version", 0, extra={"router": "r1"})
    log.info("Listening on %s:%d", "0.0.0.0", 11019)
    log.info("database_unavailable", extra={"event": "database_unavailable", "retry": 2})
    parse_error, listening, explicit = lines(buf)
    assert parse_error["event"] == "bmp_parse_error"
    assert parse_error["message"] == "bmp_parse_error: bad version (offset 0)"
    # A message not following the convention keeps its template as the event name.
    assert listening["event"] == "Listening on %s:%d"
    assert listening["message"] == "Listening on 0.0.0.0:11019"
    assert explicit["event"] == "database_unavailable" and explicit["retry"] == 2


def test_bad_format_arguments_still_log(stream, monkeypatch):
    buf = stream()
    # Only our handler: pytest's capture handler would raise on the bad record.
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, JsonLineFormatter)]
    monkeypatch.setattr(root, "handlers", ours)
    logging.getLogger("t").info("route_stats: %d routes", "many")
    (line,) = lines(buf)
    assert line["event"] == "route_stats"
    assert line["log_args"] == "('many',)"


def test_field_types_and_keys_suit_elasticsearch(stream):
    buf = stream()
    logging.getLogger("t").debug(
        "bmp_message",
        extra={
            "router": ipaddress.ip_address("2001:db8::1"),
            "hex": b"\x03\x00\x00\x00\x06\x04",
            "families": {"ipv4_unicast": 10, "ipv6_unicast": 2},
            "elapsed_seconds": timedelta(milliseconds=1500),
            "routes_per_second": 1234.5,
            "bgp.peer": "192.0.2.9",
            "level": "clash",
        },
    )
    (line,) = lines(buf)
    assert line["router"] == "2001:db8::1"
    assert line["hex"] == "030000000604"
    assert line["families"] == {"ipv4_unicast": 10, "ipv6_unicast": 2}
    assert line["elapsed_seconds"] == 1.5
    assert line["routes_per_second"] == 1234.5
    assert line["bgp_peer"] == "192.0.2.9"
    assert line["level"] == "DEBUG" and line["extra_level"] == "clash"
    assert not any("." in key for key in line)


def test_exception_fields(stream):
    buf = stream()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("t").exception("route_processing_error", extra={"routes": 5})
    (line,) = lines(buf)
    assert line["level"] == "ERROR"
    assert line["exc_type"] == "ValueError"
    assert "Traceback" in line["exc_info"] and "ValueError: boom" in line["exc_info"]
    assert line["routes"] == 5


def test_levels(stream):
    buf = stream("WARNING")
    log = logging.getLogger("pybmpmon.levels")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert [(x["event"], x["level"]) for x in lines(buf)] == [
        ("w", "WARNING"), ("e", "ERROR"), ("c", "CRITICAL")]


def test_debug_level_shows_debug(stream):
    buf = stream("DEBUG")
    logging.getLogger("pybmpmon.levels").debug("bmp_message", extra={"hex": "03"})
    assert lines(buf)[0]["level"] == "DEBUG"


def test_setup_again_replaces_its_own_handler_only(stream):
    buf = stream("INFO")
    other = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(other)
    try:
        second = io.StringIO()
        handler = setup_logging("INFO", "json", stream=second)
        logging.getLogger("t").info("once")
        assert buf.getvalue() == ""
        assert len(second.getvalue().splitlines()) == 1
        assert other in root.handlers
        root.removeHandler(handler)
    finally:
        root.removeHandler(other)


def test_text_format(stream):
    buf = stream("INFO", "text")
    log = logging.getLogger("pybmpmon.collector")
    log.info("router_connected", extra={"router": "192.0.2.1", "port": 54321,
                                        "sys_name": "edge router 1"})
    log.error("bmp_parse_error: %s", "bad version", extra={"router": "192.0.2.1"})
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("route_processing_error")
    text = buf.getvalue().splitlines()
    assert re.fullmatch(
        r"\S+Z INFO +pybmpmon\.collector router_connected router=192\.0\.2\.1 port=54321 "
        r'sys_name="edge router 1"', text[0])
    assert re.fullmatch(
        r"\S+Z ERROR +pybmpmon\.collector bmp_parse_error: bad version router=192\.0\.2\.1",
        text[1])
    assert "route_processing_error" in text[2]
    assert text[3].startswith("Traceback") and text[-1] == "RuntimeError: kaput"


def test_python_warnings_are_logged(stream):
    buf = stream("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning)
    (line,) = lines(buf)
    assert line["logger"] == "py.warnings" and line["level"] == "WARNING"
    assert "old api" in line["event"]


def test_unknown_level_or_format():
    with pytest.raises(ValueError):
        setup_logging("LOUD", "json", stream=io.StringIO())
    with pytest.raises(ValueError):
        setup_logging("INFO", "xml", stream=io.StringIO())


def test_default_stream_is_stdout_as_a_process():
    code = (
        "import logging\n"
        "from pybmpmon.logsetup import JsonLineFormatter, setup_logging\n"
        "setup_logging('INFO', 'json')\n"
        "logging.getLogger('pybmpmon').info('pybmpmon_starting', extra={'version': '0.1.0'})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["event"] == "pybmpmon_starting" and line["version"] == "0.1.0"
