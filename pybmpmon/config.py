"""Configuration: the only module that reads the process environment (SPEC §8).

Every variable is declared once, in ``SETTINGS``, with its parser/validator, its
default (as written in ``.env.example``) and a one-line description, so the README
table and ``.env.example`` can be generated from, or checked against, this table.

Values come from the environment, then from an optional ``.env`` file (the
environment wins), read with environs.  An empty value means "use the default".
A bad value raises :class:`ConfigError`, whose text is one line naming the
variable, the value and what is allowed; :func:`load_settings_or_exit` prints it
and exits 2 for the command line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import quote, unquote, urlsplit

import environs

__all__ = [
    "ConfigError",
    "Check",
    "Setting",
    "SETTINGS",
    "Settings",
    "load_settings",
    "load_settings_or_exit",
    "render_env_example",
    "redact_dsn",
    "redact_url",
    "EXIT_CONFIG",
]

#: Exit status of the command line for a configuration error.
EXIT_CONFIG = 2

#: Shown instead of secrets in repr() and logs.
REDACTED = "***"


class ConfigError(Exception):
    """A configuration value is missing or invalid; str() is one printable line."""

    def __init__(self, name: str, value: str | None, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        shown = "" if value is None else "=" + repr(value)
        super().__init__(f"{name}{shown}: expected {expected}")


class Check(NamedTuple):
    """A validator: ``convert`` turns the text into the value or raises ValueError;
    ``allowed`` says what is accepted, for the error line and the documentation."""

    convert: Callable[[str], Any]
    allowed: str

    def __call__(self, raw: str) -> Any:
        return self.convert(raw)


# --- validators ------------------------------------------------------------------------


def _integer(lo: int, hi: int) -> Check:
    def convert(raw: str) -> int:
        value = int(raw.strip(), 10)
        if not lo <= value <= hi:
            raise ValueError(raw)
        return value

    return Check(convert, f"an integer from {lo} to {hi}")


def _seconds(hi: float) -> Check:
    def convert(raw: str) -> float:
        value = float(raw.strip())
        # float() accepts "nan" and "inf"; neither is a usable setting.
        if not 0 < value <= hi:
            raise ValueError(raw)
        return value

    return Check(convert, f"a number of seconds greater than 0 and at most {hi:g}")


def _fraction(raw: str) -> float:
    value = float(raw.strip())
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


def _choice(*choices: str, aliases: dict[str, str] | None = None) -> Check:
    table = {c.lower(): c for c in choices}
    table.update({a.lower(): c for a, c in (aliases or {}).items()})

    def convert(raw: str) -> str:
        try:
            return table[raw.strip().lower()]
        except KeyError:
            raise ValueError(raw) from None

    return Check(convert, "one of " + ", ".join(choices))


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _host(raw: str) -> str:
    value = raw.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError(raw)
    return value


def _db_host(raw: str) -> str:
    value = raw.strip()
    # libpq takes a directory (Unix socket) as well as a host name.
    return value if value.startswith("/") else _host(value)


def _name(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 63 or any(c in value for c in "\x00\r\n"):
        raise ValueError(raw)
    return value


def _verbatim(raw: str) -> str:
    # Passwords are taken as written: surrounding spaces may be part of them.
    return raw


def _database_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    parts.port  # noqa: B018 - raises ValueError on a bad port
    if parts.scheme not in ("postgresql", "postgres") or not (parts.netloc or parts.query):
        raise ValueError(raw)
    return value


def _sentry_dsn(raw: str) -> str:
    # Checked by pybmpmon.sentry: a bad DSN turns Sentry off with an error log
    # instead of stopping collection (seed/sentry.md, "Invalid DSN").
    return raw.strip()


def _sentry_environment(raw: str) -> str:
    value = raw.strip()
    # Sentry's own rules for environment names.
    if not value or len(value) > 64 or "/" in value or "\n" in value or value == "None":
        raise ValueError(raw)
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_DURATION_MAX = 100 * 365 * 86400


def _duration(raw: str) -> timedelta | None:
    """"90d", "12h", "1w2d"; a bare number is days ("90"); "0" keeps forever (None)."""
    value = raw.strip().lower().replace(" ", "")
    if value.isdigit():
        seconds = int(value) * 86400
    elif _DURATION.fullmatch(value):
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ValueError(raw)
    if seconds > _DURATION_MAX:
        raise ValueError(raw)
    return timedelta(seconds=seconds) if seconds else None


# --- the table ---------------------------------------------------------------------------


class Setting(NamedTuple):
    """One environment variable: its validator, its default and what it means."""

    name: str
    check: Check
    default: str  # as written in .env.example; "" means unset/empty
    help: str
    secret: bool = False

    @property
    def attr(self) -> str:
        """The Settings attribute holding the value."""
        return self.name.lower()

    @property
    def allowed(self) -> str:
        return self.check.allowed

    def parse(self, raw: str) -> Any:
        """The value of ``raw`` (empty: the default); raises ConfigError."""
        text = raw if raw.strip() else self.default
        if not text.strip():
            return ""
        try:
            return self.check(text)
        except ValueError:
            shown = _USERINFO_PASSWORD.sub(r"\1\2:" + REDACTED + "@", raw) if self.secret else raw
            raise ConfigError(self.name, shown, self.check.allowed) from None


# "scheme://user:password@" or "user:password@", even in a malformed URL.
_USERINFO_PASSWORD = re.compile(r"^([^@]*?://)?([^:@/]*):[^@/]*@")

_HOST = Check(_host, "an IP address or a host name")
_PORT = _integer(1, 65535)
_NAME = Check(_name, "a name of 1 to 63 characters")

SETTINGS: tuple[Setting, ...] = (
    Setting("BMP_LISTEN_HOST", _HOST, "0.0.0.0",
            "Address the BMP listener binds to (:: for all IPv6 and IPv4 addresses)."),
    Setting("BMP_LISTEN_PORT", _PORT, "11019",
            "TCP port routers connect to."),
    Setting("MAX_CONNECTIONS", _integer(1, 100_000), "1000",
            "Most router connections served at once; more are refused."),
    Setting("MAX_MESSAGE_SIZE", _integer(131_072, 64 * 1024 * 1024), "16777216",
            "Largest BMP message accepted, in bytes; a longer one is a framing error "
            "that closes that connection."),
    Setting("DB_HOST",
            Check(_db_host, "an IP address, a host name or a Unix socket directory"),
            "", "PostgreSQL host or socket directory. Empty: a private PostgreSQL "
            "under ./var (make run)."),
    Setting("DB_PORT", _PORT, "5432", "PostgreSQL port."),
    Setting("DB_USER", _NAME, "pybmpmon", "PostgreSQL user."),
    Setting("DB_PASSWORD", Check(_verbatim, "any text"), "",
            "PostgreSQL password (never logged).", secret=True),
    Setting("DB_NAME", _NAME, "pybmpmon", "PostgreSQL database."),
    Setting("DATABASE_URL",
            Check(_database_url, "a URL like postgresql://user:password@host:5432/dbname"),
            "", "Connection URL; when set it replaces every DB_* variable above.",
            secret=True),
    Setting("DB_POOL_SIZE", _integer(1, 64), "4", "Database connections in the pool."),
    Setting("BATCH_SIZE", _integer(1, 1_000_000), "10000",
            "Routes written per COPY batch."),
    Setting("BATCH_TIMEOUT", _seconds(60), "0.5",
            "Seconds a partial batch waits before it is written anyway."),
    Setting("QUEUE_SIZE", _integer(1, 10_000), "32",
            "Socket reads (up to 64 KiB of BMP each, decoded) waiting for the database "
            "writer; when full, reading from routers pauses (TCP backpressure). Bounds "
            "memory: about 1 MB each."),
    Setting("STATS_INTERVAL", _seconds(86400), "10",
            "Seconds between route_stats log records per router."),
    Setting("ROUTE_RETENTION",
            Check(_duration, "a duration like 90d, 12h, 30m, 1w2d or a number of "
                  "days, at most 100 years; 0 keeps history forever"),
            "90d", "How long route history is kept (a bare number is days); 0 keeps "
            "it forever."),
    Setting("SHUTDOWN_TIMEOUT", _seconds(3600), "30",
            "Seconds allowed on SIGTERM/SIGINT to flush accepted routes and stop."),
    Setting("LOG_LEVEL",
            _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
                    aliases={"WARN": "WARNING", "FATAL": "CRITICAL"}),
            "INFO", "Least severe level logged; DEBUG adds a hex dump of each message."),
    Setting("LOG_FORMAT", _choice("json", "text"), "json",
            "json: one JSON object per line (ELK); text: for terminals."),
    Setting("SENTRY_DSN", Check(_sentry_dsn, "a Sentry DSN"), "",
            "Sentry DSN; empty disables Sentry.", secret=True),
    Setting("SENTRY_ENVIRONMENT",
            Check(_sentry_environment, "a name of 1 to 64 characters without '/'"),
            "development", "Sentry environment name."),
    Setting("SENTRY_TRACES_SAMPLE_RATE", Check(_fraction, "a number from 0.0 to 1.0"),
            "0.1", "Fraction of traces sent to Sentry."),
)

# --- the settings object -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Validated configuration; one attribute per variable, named in lower case."""

    bmp_listen_host: str = "0.0.0.0"
    bmp_listen_port: int = 11019
    max_connections: int = 1000
    max_message_size: int = 16777216
    db_host: str = ""
    db_port: int = 5432
    db_user: str = "pybmpmon"
    db_password: str = ""
    db_name: str = "pybmpmon"
    database_url: str = ""
    db_pool_size: int = 4
    batch_size: int = 10000
    batch_timeout: float = 0.5
    queue_size: int = 32
    stats_interval: float = 10.0
    route_retention: timedelta | None = timedelta(days=90)  # None: keep forever
    shutdown_timeout: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"
    sentry_dsn: str = ""
    sentry_environment: str = "development"
    sentry_traces_sample_rate: float = 0.1

    @property
    def embedded_db(self) -> bool:
        """True when neither DATABASE_URL nor DB_HOST is set: `make run`'s private
        PostgreSQL under ./var.  Its launcher then passes the real host with
        ``dataclasses.replace(settings, db_host=socket_dir, db_port=port)``."""
        return not self.database_url and not self.db_host

    def db_params(self) -> dict[str, Any]:
        """libpq connection keywords (host, port, user, password, dbname, ...)."""
        if self.database_url:
            return _url_params(self.database_url)
        params: dict[str, Any] = {
            "host": self.db_host,
            "port": self.db_port,
            "user": self.db_user,
            "dbname": self.db_name,
        }
        if self.db_password:
            params["password"] = self.db_password
        if not self.db_host:
            del params["host"]
        return params

    @property
    def dsn(self) -> str:
        """libpq keyword/value connection string for psycopg2.connect()."""
        params = {"application_name": "pybmpmon", **self.db_params()}
        return " ".join(f"{k}={_libpq_quote(str(v))}" for k, v in params.items())

    @property
    def db_display(self) -> str:
        """Where the database is, as a URL without the password: for logs and `check`.
        No host (the embedded database before its launcher sets one) shows as
        ``postgresql://user@/dbname``, libpq's spelling of the default socket."""
        params = self.db_params()
        host = str(params.get("host", ""))
        if host.startswith("/"):
            host = quote(host, safe="")
        elif ":" in host:
            host = f"[{host}]"
        port = f":{params['port']}" if host and params.get("port") else ""
        user = quote(str(params.get("user", "")), safe="")
        dbname = quote(str(params.get("dbname", "")), safe="")
        return f"postgresql://{user}@{host}{port}/{dbname}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value set (DB password, URL password, Sentry DSN keys), for
        scrubbing."""
        found = []
        if self.db_password:
            found.append(self.db_password)
        if self.database_url:
            password = _url_params(self.database_url).get("password")
            if password:
                found.append(password)
        if self.sentry_dsn:
            try:
                parts = urlsplit(self.sentry_dsn)
                found.extend(unquote(p) for p in (parts.username, parts.password) if p)
            except ValueError:
                pass
        return tuple(dict.fromkeys(found))

    def log_fields(self) -> dict[str, Any]:
        """Every setting as a flat dict safe to log: secrets redacted, durations as
        seconds."""
        out: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.attr)
            if setting.name == "DATABASE_URL":
                value = redact_url(value)
            elif setting.name == "SENTRY_DSN":
                value = redact_dsn(value)
            elif setting.secret:
                value = REDACTED if value else ""
            elif isinstance(value, timedelta):
                value = int(value.total_seconds())
            elif value is None:
                value = 0
            out[setting.attr] = value
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.log_fields().items())
        return f"Settings({fields})"


def redact_url(url: str) -> str:
    """The URL with its password (or, for a Sentry DSN, its keys) replaced by ***."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        user, password, host = parts.username, parts.password, parts.hostname
        port = parts.port
    except ValueError:
        return REDACTED
    if user is None and password is None:
        return url
    if parts.scheme in ("http", "https"):  # a Sentry DSN: the key is the username
        userinfo = REDACTED
    else:
        userinfo = user + (":" + REDACTED if password is not None else "")
    if host and ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{userinfo}@{host or ''}" + (f":{port}" if port else "")
    return parts._replace(netloc=netloc).geturl()


def redact_dsn(dsn: str) -> str:
    """A Sentry DSN with its key(s) replaced by ***, even when it is malformed."""
    return re.sub(r"^([^@/]*://)?[^@]*@", lambda m: (m.group(1) or "") + REDACTED + "@",
                  dsn, count=1)


def _url_params(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    params: dict[str, Any] = {}
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port:
        params["port"] = parts.port
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    dbname = unquote(parts.path.lstrip("/"))
    if dbname:
        params["dbname"] = dbname
    for item in parts.query.split("&"):
        key, sep, value = item.partition("=")
        if sep and key:
            params[unquote(key)] = unquote(value)
    return params


def _libpq_quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- loading -------------------------------------------------------------------------------


def load_settings(env_file: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate every variable from the environment and a .env file.

    ``env_file``: a .env path that must exist; None reads ./.env when present.
    The process environment wins over the file.  Raises ConfigError.
    """
    env = environs.Env(expand_vars=False)
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise ConfigError("env file", str(path), "an existing .env file")
        env.read_env(path, recurse=False)
    elif Path(".env").is_file():
        env.read_env(".env", recurse=False)

    values = {s.attr: s.parse(env.str(s.name, "")) for s in SETTINGS}
    return Settings(**values)


def load_settings_or_exit(env_file: str | os.PathLike[str] | None = None) -> Settings:
    """load_settings() for the command line: a bad value prints one line to stderr
    and exits with status 2."""
    try:
        return load_settings(env_file)
    except ConfigError as exc:
        print(f"pybmpmon: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def render_env_example() -> str:
    """The text of .env.example: every variable with its description and default."""
    lines = [
        "# pybmpmon configuration. Copy to .env; the process environment wins over",
        "# this file. An empty value means the default shown.",
    ]
    for setting in SETTINGS:
        lines.append("")
        lines.append(f"# {setting.help} Allowed: {setting.allowed}.")
        lines.append(f"{setting.name}={setting.default}")
    return "\n".join(lines) + "\n"
