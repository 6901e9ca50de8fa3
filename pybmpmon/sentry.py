"""Sentry reporting, exactly as ../shared/seed/sentry.md describes (SPEC §7).

- SENTRY_DSN empty: nothing happens, nothing is logged.  sentry-sdk missing: one
  ``sentry_sdk_not_installed`` WARNING.  A DSN sentry-sdk rejects: one
  ``sentry_invalid_dsn`` ERROR and collection goes on without Sentry.
- Otherwise the LoggingIntegration turns INFO+ records into breadcrumbs and ERROR+
  records into issues, and four explicit events carry the seed's level, message,
  tags and contexts: :func:`capture_peer_up`, :func:`capture_peer_down`,
  :func:`capture_parse_error`, :func:`capture_route_processing_error`.  The ERROR log
  records named in :data:`REPORTED_EVENTS` are reported by those helpers, so the
  LoggingIntegration's copy of them is dropped (their breadcrumb is kept).
- Sending never blocks collection: capturing only queues the event; a background
  worker (a greenlet once gevent has patched threading) sends them with a short HTTP
  timeout; while its queue of 100 is full (Sentry slow or down) or Sentry rate-limits
  us, the helpers return at once without building events.  At exit the SDK waits at
  most SHUTDOWN_TIMEOUT seconds.
- Every event, transaction and breadcrumb is scrubbed of the configured secrets (DB
  password, DATABASE_URL password, Sentry DSN keys), URL passwords and values of
  password-like keys before it leaves the process.

The helpers never raise and do nothing while Sentry is off.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING, Any, Iterable

from pybmpmon import __version__
from pybmpmon.config import redact_dsn
from pybmpmon.logsetup import event_name

if TYPE_CHECKING:
    from pybmpmon.config import Settings

__all__ = [
    "DATA_HEX_LIMIT",
    "REPORTED_EVENTS",
    "capture_parse_error",
    "capture_peer_down",
    "capture_peer_up",
    "capture_route_processing_error",
    "init_sentry",
    "make_scrubber",
    "shutdown_sentry",
]

log = logging.getLogger(__name__)

#: Log events whose Sentry issue comes from an explicit helper, not from logging.
REPORTED_EVENTS = frozenset({"bmp_parse_error", "bgp_parse_error", "route_processing_error"})
#: seed/sentry.md: "First 512 characters of hex dumps".
DATA_HEX_LIMIT = 512
#: Seconds the SDK may spend at exit sending what is queued.
SHUTDOWN_TIMEOUT = 2.0
#: Seconds one HTTP request to Sentry may take (the SDK's own default is 30).
HTTP_TIMEOUT = 5.0

FILTERED = "[Filtered]"
# scheme://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]*@")
# libpq keyword form: password=secret or password='se cret'
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# Keys whose values are secret whatever they hold (locals, extras, contexts).
_SECRET_KEY = re.compile(
    r"(password|passwd|pwd|secret|dsn|database_url|token|api_?key|authorization)$",
    re.IGNORECASE,
)
# Shorter secrets would match inside unrelated text; they are filtered when a whole
# value equals them.
_MIN_SUBSTRING_SECRET = 4
# Values named by the code, not by data: left alone, so a password that happens to
# equal a name ("pybmpmon") does not mangle the release, loggers and stack frames.
_CODE_KEYS = frozenset({
    "release", "environment", "platform", "sdk", "logger", "module", "function",
    "filename", "abs_path", "package", "context_line", "pre_context", "post_context",
})


class _Scrubber:
    """Removes secrets from a Sentry event, transaction or breadcrumb (any JSON-like
    structure), returning a scrubbed copy."""

    def __init__(self, secrets: Iterable[str]) -> None:
        secrets = {s for s in secrets if s}
        self._exact = frozenset(secrets)
        long = sorted((s for s in secrets if len(s) >= _MIN_SUBSTRING_SECRET), key=len,
                      reverse=True)
        self._secret = re.compile("|".join(map(re.escape, long))) if long else None

    def text(self, value: str) -> str:
        if value in self._exact:
            return FILTERED
        if self._secret is not None:
            value = self._secret.sub(FILTERED, value)
        if "://" in value:
            value = _URL_PASSWORD.sub(r"\1" + FILTERED + "@", value)
        if "=" in value:
            value = _KEYWORD_PASSWORD.sub(r"\1" + FILTERED, value)
        return value

    def walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key in _CODE_KEYS:
                    out[key] = value
                    continue
                if isinstance(key, str):
                    if _SECRET_KEY.search(key) and value and not isinstance(
                        value, (dict, list, tuple)
                    ):
                        value = FILTERED
                    key = self.text(key)
                out[key] = self.walk(value)
            return out
        if isinstance(obj, (list, tuple)):
            return [self.walk(item) for item in obj]
        if isinstance(obj, (bytes, bytearray)):
            return self.text(bytes(obj).decode("utf-8", "replace"))
        return obj


def make_scrubber(secrets: Iterable[str]):
    """A ``before_send``-style callable (event, hint) -> scrubbed event."""
    scrubber = _Scrubber(secrets)

    def scrub(event: Any, hint: Any = None) -> Any:
        try:
            return scrubber.walk(event)
        except Exception:  # noqa: BLE001 - never send what could not be scrubbed
            return None

    return scrub


def _before_send(scrub):
    def before_send(event: Any, hint: Any) -> Any:
        record = (hint or {}).get("log_record")
        if record is not None and event_name(record) in REPORTED_EVENTS:
            return None  # reported by capture_parse_error / capture_route_processing_error
        return scrub(event, hint)

    return before_send


def init_sentry(settings: Settings) -> bool:
    """Start Sentry from the settings; True when it is on.

    Call after setup_logging() (it logs) and, in the server, after gevent's
    monkey-patching (the SDK's worker then runs as a greenlet).
    """
    dsn = settings.sentry_dsn
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.integrations.modules import ModulesIntegration
        from sentry_sdk.transport import HttpTransport
        from sentry_sdk.utils import BadDsn, Dsn
    except ImportError:
        log.warning("sentry_sdk_not_installed",
                    extra={"hint": "pip install sentry-sdk to report to Sentry"})
        return False
    try:
        Dsn(dsn)
    except BadDsn as exc:
        log.error("sentry_invalid_dsn: %s", exc,
                  extra={"sentry_dsn": redact_dsn(dsn), "reason": str(exc)})
        return False

    class CollectorTransport(HttpTransport):
        # A hung Sentry holds the worker for at most this long per request; events
        # captured meanwhile queue up, then are dropped, never waited for.
        TIMEOUT = HTTP_TIMEOUT

    scrub = make_scrubber(settings.secrets)
    release = f"pybmpmon@{__version__}"
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=settings.sentry_environment,
            release=release,
            traces_sample_rate=settings.sentry_traces_sample_rate,
            # No PII (send_default_pii) is the SDK's default; passing the option
            # is deprecated in newer 2.x releases.
            integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
            before_send=_before_send(scrub),
            before_send_transaction=scrub,
            transport=CollectorTransport,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            # Local variables of a router greenlet's frames are lists of decoded
            # events: their repr() and scrubbing cost seconds per burst of
            # parse errors, and they would carry router data into Sentry.
            include_local_variables=False,
            max_breadcrumbs=30,
            # The list of every installed package, attached to each event, is most
            # of the CPU an event costs the router greenlet that reports it.
            disabled_integrations=[ModulesIntegration],
            # Only the integrations chosen here, whatever else is installed.
            auto_enabling_integrations=False,
        )
    except Exception as exc:  # noqa: BLE001 - Sentry trouble must not stop collection
        log.error("sentry_invalid_dsn: %s", exc,
                  extra={"sentry_dsn": redact_dsn(dsn), "reason": str(exc)})
        return False
    log.info(
        "sentry_initialized",
        extra={
            "environment": settings.sentry_environment,
            "traces_sample_rate": settings.sentry_traces_sample_rate,
            "release": release,
        },
    )
    return True


def shutdown_sentry(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Send what is queued (waiting at most ``timeout`` seconds) and stop Sentry."""
    sdk = _active_sdk()
    if sdk is None:
        return
    try:
        sdk.get_client().close(timeout=timeout)
    except Exception:  # noqa: BLE001
        log.warning("sentry_shutdown_failed", exc_info=True)


def _active_sdk() -> Any:
    try:
        import sentry_sdk
    except ImportError:
        return None
    try:
        client = sentry_sdk.get_client()
        # A client without a transport (closed, or initialised without a DSN) sends
        # nothing: skip the work of building events.
        if client.is_active() and getattr(client, "transport", None) is not None:
            return sentry_sdk
    except Exception:  # noqa: BLE001
        pass
    return None


def _reporter(build):
    """Turn ``build(...) -> (level, message, tags, contexts, exc)`` into a helper that
    sends that event, returns its id, does nothing while Sentry is off, and never
    raises (reporting must never break collection)."""

    @functools.wraps(build)
    def report(*args: Any, **kwargs: Any) -> str | None:
        sdk = _active_sdk()
        if sdk is None:
            return None
        try:
            if not sdk.get_client().transport.is_healthy():
                # Queue full (Sentry slow or down) or rate limited: the SDK would
                # drop the event; do not spend the caller's time building it.
                return None
            level, message, tags, contexts, exc = build(*args, **kwargs)
            if exc is not None:
                from sentry_sdk.utils import event_from_exception

                event, hint = event_from_exception(
                    exc,
                    client_options=sdk.get_client().options,
                    mechanism={"type": "pybmpmon", "handled": True},
                )
            else:
                event, hint = {}, {}
            event["level"] = level
            event["message"] = message
            event["tags"] = tags
            event["contexts"] = contexts
            return sdk.capture_event(event, hint=hint)
        except Exception:  # noqa: BLE001
            log.warning("sentry_capture_failed", exc_info=True)
            return None

    return report


@_reporter
def capture_peer_up(router_ip: Any, bgp_peer: Any, bgp_peer_asn: int):
    """A BGP session of router ``router_ip`` (the BMP speaker) came up (level info)."""
    router, peer, asn = str(router_ip), str(bgp_peer), int(bgp_peer_asn)
    return (
        "info",
        f"BMP peer {router} established session with BGP peer {peer} (AS{asn})",
        {"event_type": "peer_up", "peer_ip": router},
        {"bmp_peer": {"peer_ip": router, "bgp_peer": peer, "bgp_peer_asn": asn}},
        None,
    )


@_reporter
def capture_peer_down(router_ip: Any, reason_code: int):
    """Router ``router_ip`` reported a BGP peer down with that BMP reason code
    (RFC 7854 §4.9) (level warning)."""
    router, reason = str(router_ip), int(reason_code)
    return (
        "warning",
        f"BMP peer {router} disconnected (reason code: {reason})",
        {"event_type": "peer_down", "peer_ip": router},
        {"bmp_peer": {"peer_ip": router, "reason_code": reason}},
        None,
    )


@_reporter
def capture_parse_error(
    error_type: str,
    router_ip: Any,
    message: str,
    data: bytes | bytearray | memoryview | None,
    exc: BaseException | None = None,
):
    """A message from ``router_ip`` failed to decode (level error).

    ``error_type``: "bmp_parse_error" or "bgp_parse_error".  ``message``: a short
    summary ("Invalid BMP version"); the event's error_message is str(exc) when an
    exception is given.  ``data``: the raw message; its first 256 bytes are sent as
    512 hex characters.  ``exc`` is attached with its traceback.
    """
    router = str(router_ip)
    summary = message or (str(exc) if exc is not None else error_type)
    detail = (str(exc) if exc is not None else "") or summary
    raw = b"" if data is None else bytes(data[: DATA_HEX_LIMIT // 2])
    return (
        "error",
        f"{error_type}: {summary} from {router}",
        {"error_type": error_type, "peer_ip": router},
        {"parse_error": {"peer_ip": router, "error_message": detail,
                         "data_hex": raw.hex()[:DATA_HEX_LIMIT]}},
        exc,
    )


@_reporter
def capture_route_processing_error(
    router_ip: Any,
    error: str | BaseException,
    route_count: int,
    exc: BaseException | None = None,
):
    """Routes from ``router_ip`` could not be processed or stored (level error).

    ``error``: the error text or exception; ``route_count``: routes affected.
    ``exc`` (or ``error`` when it is an exception) is attached with its traceback.
    ``router_ip`` None (a batch from several routers) leaves out "from ..." and the
    peer_ip tag and context key.
    """
    if exc is None and isinstance(error, BaseException):
        exc = error
    text = str(error)
    tags = {"error_type": "route_processing_error"}
    context: dict[str, Any] = {}
    if router_ip is not None:
        router = str(router_ip)
        title = f"Route processing error from {router}: {text}"
        tags["peer_ip"] = router
        context["peer_ip"] = router
    else:
        title = f"Route processing error: {text}"
    context["error_message"] = text
    context["route_count"] = int(route_count)
    return "error", title, tags, {"route_processing": context}, exc
