"""Logging setup (SPEC §6): one JSON object per line on stdout, or text for terminals.

Every record becomes::

    {"timestamp": "2024-05-01T10:00:00.123Z", "level": "INFO",
     "logger": "pybmpmon.collector", "event": "router_connected",
     "router": "192.0.2.1", "port": 54321}

How code logs (the convention the formatter relies on):

- The message is the stable snake_case event name and the context goes in ``extra``:
  ``log.info("router_connected", extra={"router": ip, "port": port})``.
- A human text may follow the name after a colon, with %-style arguments (never an
  f-string, so Sentry groups by the template): ``log.error("bmp_parse_error: %s",
  err, extra={...})`` gives ``event`` "bmp_parse_error" and ``message``
  "bmp_parse_error: <err>".  ``extra={"event": name}`` names the event explicitly.
  Any other message (third-party libraries) keeps its template as ``event`` and its
  rendered text as ``message``.
- Field names and types, for Elasticsearch (one type per key across all records):
  addresses, names, prefixes and reasons are strings (``router``, ``peer``,
  ``sys_name``, ``error``); counts and numeric codes are integers (``asn``,
  ``messages``, ``routes``, ``reason_code``); durations are float seconds named
  ``*_seconds``; rates are floats named ``*_per_second``; per-family counts are a
  nested object of integers (``{"ipv4_unicast": 10}``).  Dots in keys are replaced by
  ``_`` so they never become nested objects by accident.  Bytes are shown as hex,
  ipaddress objects and other unknown objects as their str().
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

__all__ = [
    "JsonLineFormatter",
    "TextFormatter",
    "event_name",
    "record_fields",
    "setup_logging",
]

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CORE_KEYS = ("timestamp", "level", "logger", "event", "message")
# "router_connected" or "bmp_parse_error: details..."
_EVENT_NAME = re.compile(r"([a-z][a-z0-9_]*)(?::.*)?", re.DOTALL)
# Loggers too chatty at DEBUG: urllib3 logs every request of the Sentry transport.
_QUIET_LOGGERS = ("urllib3",)
_HANDLER_MARK = "_pybmpmon_handler"


def event_name(record: logging.LogRecord) -> str:
    """The stable event name of a record (see the module docstring)."""
    explicit = record.__dict__.get("event")
    if isinstance(explicit, str) and explicit:
        return explicit
    template = record.msg if isinstance(record.msg, str) else str(record.msg)
    match = _EVENT_NAME.fullmatch(template)
    return match.group(1) if match else template


def _message(record: logging.LogRecord) -> tuple[str, Any]:
    """The rendered message, and the raw arguments when they do not fit the template
    (a bug in the caller must not lose the record)."""
    try:
        return record.getMessage(), None
    except Exception:  # noqa: BLE001 - any formatting error of the caller
        return str(record.msg), repr(record.args)


def _utc(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one log line, in order: core fields, extra fields, exception."""
    message, bad_args = _message(record)
    event = event_name(record)
    fields: dict[str, Any] = {
        "timestamp": _utc(record.created),
        "level": record.levelname,
        "logger": record.name,
        "event": event,
    }
    if message != event:
        fields["message"] = message
    if bad_args is not None:
        fields["log_args"] = bad_args
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key == "event" or not isinstance(key, str):
            continue
        if key.startswith("_"):
            continue
        key = key.replace(".", "_")
        if key in _CORE_KEYS:
            key = "extra_" + key
        fields[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc_type"] = record.exc_info[0].__name__
        fields["exc_info"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        fields["exc_info"] = record.exc_text
    if record.stack_info:
        fields["stack_info"] = formatter.formatStack(record.stack_info)
    return fields


def _plain(value: Any) -> Any:
    """Values JSON does not know, in the documented shapes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return None


class _Encoder(JsonEncoder):
    def default(self, o: Any) -> Any:
        plain = _plain(o)
        if plain is not None:
            return plain
        return super().default(o)


class JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter with pybmpmon's fields (see module docstring)."""

    def __init__(self) -> None:
        super().__init__(json_encoder=_Encoder)

    def format(self, record: logging.LogRecord) -> str:
        return self.serialize_log_record(record_fields(record, self))


class TextFormatter(logging.Formatter):
    """For terminals: ``timestamp LEVEL logger message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        exc = fields.pop("exc_info", None)
        stack = fields.pop("stack_info", None)
        fields.pop("exc_type", None)
        head = "{} {:<8} {} {}".format(
            fields.pop("timestamp"),
            fields.pop("level"),
            fields.pop("logger"),
            fields.pop("message", None) or fields["event"],
        )
        fields.pop("event")
        parts = [head]
        parts.extend(f"{key}={_text_value(value)}" for key, value in fields.items())
        line = " ".join(parts)
        for block in (exc, stack):
            if block:
                line += "\n" + block
        return line


_BARE = re.compile(r"[^\s\"'=\\]+")


def _text_value(value: Any) -> str:
    plain = _plain(value)
    if plain is not None:
        value = plain
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text)


def setup_logging(
    level: str | int = "INFO", fmt: str = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (default: sys.stdout at call time) as JSON
    lines (fmt "json") or readable text (fmt "text"), at ``level`` and above.

    Call it first, before Sentry and the server.  Calling it again replaces the
    handler it installed before (handlers others added, e.g. pytest's, are kept).
    Returns the installed handler.
    """
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    if fmt == "json":
        formatter: logging.Formatter = JsonLineFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}")

    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Python warnings (deprecations in libraries) become log records too.
    logging.captureWarnings(True)
    return handler
