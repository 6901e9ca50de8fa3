"""The ``pybmpmon`` command line (SPEC §9).

Subcommands: ``serve`` (the default), ``migrate``, ``check``, ``decode`` and
``replay``.  Each handler takes the parsed arguments and returns the exit
status.  Only the pure codec is imported here; the service's dependencies
(gevent, psycopg2, configuration) belong inside the handlers that need them,
so ``pybmpmon decode`` works on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import BinaryIO, Callable, Optional, TextIO

from pybmpmon import __version__
from pybmpmon.bmp.framer import DEFAULT_MAX_MESSAGE_SIZE, Framer
from pybmpmon.bmp.model import RouteMonitoring
from pybmpmon.errors import DecodeError, FramingError
from pybmpmon.render import BMP_TYPE_NAMES, message_type, render_error, render_message
from pybmpmon.session import DecodeFailure, RouterSession

_COMMON_HEADER = 6
# Bytes shown after a broken common header: enough to recognise what the
# stream really is (text, TLS, another protocol) without dumping a file.
_FRAMING_CONTEXT = 64

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``pybmpmon`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable = getattr(args, "handler", None) or _cmd_serve
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybmpmon",
        description="BGP Monitoring Protocol (RFC 7854) monitoring station.",
        epilog="Without a command, pybmpmon runs 'serve'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the collector (the default)",
        description="Run the collector: accept BMP connections from routers and store what they "
        "send in PostgreSQL. "
        "Configuration comes from the environment and an optional .env file.",
    )
    serve.set_defaults(handler=_cmd_serve)

    migrate = commands.add_parser(
        "migrate",
        help="apply the database schema migrations",
        description="Apply the SQL migrations shipped with pybmpmon to the configured database, "
        "under an advisory lock, and exit.",
    )
    migrate.set_defaults(handler=_cmd_migrate)

    check = commands.add_parser(
        "check",
        help="check configuration, database reachability and schema version",
        description="Validate the configuration, connect to the database and report the schema "
        "version; exit 0 when everything is in order.",
    )
    check.set_defaults(handler=_cmd_check)

    decode = commands.add_parser(
        "decode",
        help="print a raw BMP capture as JSON lines",
        description="Decode a raw BMP stream (as a router sends it) and print one JSON object per "
        "BMP message. A message that fails to decode prints an object of type 'error' with its "
        "offset in the file and its bytes as hex, and decoding goes on; a broken common header "
        "stops decoding. Exit status: 0 clean, 1 when any error was printed, 2 when the file "
        "cannot be read.",
    )
    decode.add_argument("file", metavar="FILE", help="capture file, or - for standard input")
    decode.add_argument(
        "--summary",
        action="store_true",
        help="print one JSON object with counts per message type, RIB view and family instead",
    )
    decode.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="N",
        help=f"largest acceptable BMP message in bytes (default {DEFAULT_MAX_MESSAGE_SIZE})",
    )
    decode.set_defaults(handler=_cmd_decode)

    replay = commands.add_parser(
        "replay",
        help="send a recorded raw BMP stream to a station",
        description="Connect to a BMP station and send it a recorded raw BMP stream, for testing "
        "and support.",
    )
    replay.add_argument("file", metavar="FILE", help="capture file, or - for standard input")
    replay.add_argument("target", metavar="HOST:PORT", help="the station to send to")
    replay.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="MSGS",
        help="BMP messages per second (default: as fast as the station reads)",
    )
    replay.add_argument(
        "--source",
        default=None,
        metavar="ADDR",
        help="local address to connect from, to pose as a given router "
        "(e.g. 127.0.0.11; default: chosen by the system)",
    )
    replay.set_defaults(handler=_cmd_replay)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < _COMMON_HEADER:
        raise argparse.ArgumentTypeError(f"must be at least {_COMMON_HEADER}")
    return value


def _cmd_serve(args: argparse.Namespace) -> int:
    # Before anything imports socket, ssl or threading for real.
    from gevent import monkey

    monkey.patch_all()
    from pybmpmon import service
    from pybmpmon.config import load_settings_or_exit

    settings = load_settings_or_exit()
    service.start_logging(settings)
    return service.serve(settings)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from pybmpmon import service
    from pybmpmon.config import load_settings_or_exit

    settings = load_settings_or_exit()
    service.start_logging(settings)
    return service.run_migrate(settings)


def _cmd_check(args: argparse.Namespace) -> int:
    from pybmpmon import service
    from pybmpmon.config import load_settings_or_exit

    settings = load_settings_or_exit()
    return service.run_check(settings)


def _cmd_replay(args: argparse.Namespace) -> int:
    from pybmpmon.replay import ReplayError, replay

    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as error:
        print(f"pybmpmon replay: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with stream:
            messages, sent = replay(stream, args.target, args.rate, source=args.source)
    except ReplayError as error:
        print(f"pybmpmon replay: {error}", file=sys.stderr)
        return EXIT_ERRORS
    print(f"pybmpmon replay: sent {messages} messages ({sent} bytes) to {args.target}",
          file=sys.stderr)
    return EXIT_OK


# -- decode -----------------------------------------------------------------


def _cmd_decode(args: argparse.Namespace) -> int:
    if args.file == "-":
        stream = sys.stdin.buffer
        return _decode_to_stdout(stream, args)
    try:
        stream = open(args.file, "rb")
    except OSError as error:
        print(
            f"pybmpmon decode: cannot read {args.file}: {error.strerror or error}", file=sys.stderr
        )
        return EXIT_USAGE
    with stream:
        return _decode_to_stdout(stream, args)


def _decode_to_stdout(stream: BinaryIO, args: argparse.Namespace) -> int:
    try:
        status = decode_stream(
            stream, sys.stdout, summary=args.summary, max_message_size=args.max_message_size
        )
        sys.stdout.flush()
    except BrokenPipeError:
        # `pybmpmon decode x.bmp | head`: the reader left, which is not an error.
        # Point stdout at nothing so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as error:
        print(f"pybmpmon decode: read error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return status


def decode_stream(
    stream: BinaryIO,
    out: TextIO,
    summary: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> int:
    """Decode the BMP messages of *stream*, writing JSON lines to *out*.

    Returns the exit status: 0 when every message decoded, 1 otherwise.

    Strategy: the common header is peeked here only to learn how many bytes
    the message has; each whole message then goes through
    :class:`~pybmpmon.session.RouterSession`, whose framer does the checking,
    so ``decode`` sees exactly what the collector sees.  Reading message by
    message keeps memory flat on big captures and gives every error its
    offset in the file.
    """
    session = RouterSession(max_message_size=max_message_size)
    totals = Summary() if summary else None
    dumps = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode
    write = out.write
    offset = 0
    errors = 0

    def report(error: DecodeError, raw: bytes, at: int, peer=None) -> None:
        nonlocal errors
        errors += 1
        rendered = render_error(error, raw, at, peer)
        if totals is not None:
            totals.add_error(rendered, len(raw))
        else:
            write(dumps(rendered) + "\n")

    while True:
        header = stream.read(_COMMON_HEADER)
        if not header:
            break
        if len(header) < _COMMON_HEADER:
            report(
                FramingError(f"stream ends inside a BMP common header ({len(header)} bytes)", 0),
                header,
                offset,
            )
            break
        length = int.from_bytes(header[1:5], "big")
        if header[0] != 3 or length < _COMMON_HEADER or length > max_message_size:
            error = _framing_error(header, max_message_size)
            report(error, header + stream.read(_FRAMING_CONTEXT - _COMMON_HEADER), offset)
            break
        body = stream.read(length - _COMMON_HEADER)
        raw = header + body
        if len(raw) < length:
            report(
                FramingError(f"stream ends inside a BMP message: {len(raw)} of {length} bytes", 1),
                raw,
                offset,
            )
            break
        try:
            events = session.feed(raw)
        except FramingError as error:  # pragma: no cover - the header was checked above;
            # kept so a stricter framer can never crash the command
            report(error, raw, offset)
            break
        for event in events:
            if type(event) is DecodeFailure:
                report(event.error, event.raw, event.offset, event.peer)
            elif type(event) not in BMP_TYPE_NAMES:
                continue  # a session note (e.g. first UPDATE of an unknown family): not a message
            elif totals is not None:
                totals.add(event, length)
            else:
                write(dumps(render_message(event)) + "\n")
        offset += length

    if totals is not None:
        write(dumps(totals.as_dict()) + "\n")
    return EXIT_ERRORS if errors else EXIT_OK


def _framing_error(header: bytes, max_message_size: int):
    """The framer's own error for a bad common header (offset within the message).

    Reusing the framer's wording keeps ``decode`` and the collector's logs alike.
    """
    framer = Framer(max_message_size)
    try:
        framer.feed(header)
        framer.feed(b"")
    except FramingError as error:
        return error
    return FramingError(f"invalid BMP common header {header.hex()}", 0)


class Summary:
    """Counts over a decoded stream: per message type, per RIB view and family.

    Strategy: counted from the decoded objects, not from rendered dicts, so a
    large capture summarises without building a dict per route.
    """

    def __init__(self, error_samples: int = 10):
        self.messages = 0
        self.bytes = 0
        self.errors = 0
        self.by_type: Counter = Counter()
        self.by_rib: Counter = Counter()
        self.routes: dict = {}  # rib -> afi_safi -> Counter(action)
        self.end_of_rib: dict = {}  # rib -> Counter(afi_safi)
        self.peers: set = set()
        self.first_errors: list = []
        self._error_samples = error_samples

    def add(self, msg: object, size: int = 0) -> None:
        self.messages += 1
        self.bytes += size
        self.by_type[message_type(msg)] += 1
        peer = getattr(msg, "peer", None)
        if peer is not None:
            self.peers.add(peer.key)
        if type(msg) is RouteMonitoring:
            rib = msg.peer.rib  # type: ignore[attr-defined]
            self.by_rib[rib] += 1
            update = msg.update  # type: ignore[attr-defined]
            families = self.routes.setdefault(rib, {})
            for action, sets in (("withdraw", update.withdrawn), ("announce", update.announced)):
                for route_set in sets:
                    counts = families.get(route_set.afi_safi)
                    if counts is None:
                        counts = families[route_set.afi_safi] = Counter()
                    if route_set.nlri or route_set.raw is None:
                        counts[action] += len(route_set.nlri)
                    else:
                        counts[action + "_undecoded"] += 1
            if update.end_of_rib is not None:
                self.end_of_rib.setdefault(rib, Counter())[update.end_of_rib] += 1

    def add_error(self, rendered_error: dict, size: int = 0) -> None:
        self.errors += 1
        self.bytes += size
        if len(self.first_errors) < self._error_samples:
            self.first_errors.append({k: v for k, v in rendered_error.items() if k != "hex"})

    def as_dict(self) -> dict:
        return {
            "type": "summary",
            "messages": self.messages,
            "bytes": self.bytes,
            "errors": self.errors,
            "messages_by_type": dict(sorted(self.by_type.items())),
            "route_monitoring_by_rib": dict(sorted(self.by_rib.items())),
            "routes_by_rib": {
                rib: {fam: dict(sorted(c.items())) for fam, c in sorted(fams.items())}
                for rib, fams in sorted(self.routes.items())
            },
            "end_of_rib_by_rib": {
                rib: dict(sorted(c.items())) for rib, c in sorted(self.end_of_rib.items())
            },
            "peers": len(self.peers),
            "first_errors": self.first_errors,
        }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
