"""pybmpmon.config: defaults, .env files, validation errors, DSN building, redaction."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pybmpmon import config
from pybmpmon.config import SETTINGS, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No configuration variable from the outer environment, and no ./.env."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_table_declares_every_spec_variable_once():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    spec = {
        "BMP_LISTEN_HOST", "BMP_LISTEN_PORT", "DB_HOST", "DB_PORT", "DB_USER",
        "DB_PASSWORD", "DB_NAME", "DATABASE_URL", "DB_POOL_SIZE", "BATCH_SIZE",
        "BATCH_TIMEOUT", "MAX_MESSAGE_SIZE", "MAX_CONNECTIONS", "STATS_INTERVAL",
        "ROUTE_RETENTION", "QUEUE_SIZE", "LOG_LEVEL", "LOG_FORMAT", "SENTRY_DSN",
        "SENTRY_ENVIRONMENT", "SENTRY_TRACES_SAMPLE_RATE", "SHUTDOWN_TIMEOUT",
    }
    assert set(names) == spec
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == {s.attr for s in SETTINGS}
    for setting in SETTINGS:
        assert setting.help and setting.allowed


def test_defaults():
    s = load_settings()
    assert s.bmp_listen_host == "0.0.0.0"
    assert s.bmp_listen_port == 11019
    assert s.db_host == "" and s.embedded_db
    assert (s.db_port, s.db_user, s.db_password, s.db_name) == (5432, "pybmpmon", "", "pybmpmon")
    assert s.database_url == ""
    assert s.db_pool_size == 4
    assert s.batch_size == 10000
    assert s.batch_timeout == 0.5
    assert s.max_message_size == 16 * 1024 * 1024
    assert s.max_connections == 1000
    assert s.stats_interval == 10
    assert s.route_retention == timedelta(days=90)
    assert s.queue_size == 32
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert s.sentry_dsn == ""
    assert s.sentry_environment == "development"
    assert s.sentry_traces_sample_rate == 0.1
    assert s.shutdown_timeout == 30
    # The dataclass defaults and the table's defaults agree.
    assert s == Settings()


def test_table_defaults_parse_to_dataclass_defaults():
    for setting in SETTINGS:
        assert setting.parse("") == getattr(Settings(), setting.attr), setting.name


def test_environment_values(monkeypatch):
    env = {
        "BMP_LISTEN_HOST": "::",
        "BMP_LISTEN_PORT": "1790",
        "DB_HOST": "db.example.net",
        "DB_PORT": "6432",
        "DB_POOL_SIZE": "8",
        "BATCH_SIZE": "20000",
        "BATCH_TIMEOUT": "0.25",
        "MAX_MESSAGE_SIZE": "1048576",
        "MAX_CONNECTIONS": "50",
        "STATS_INTERVAL": "2.5",
        "ROUTE_RETENTION": "12h",
        "QUEUE_SIZE": "100",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "TEXT",
        "SENTRY_ENVIRONMENT": "production",
        "SENTRY_TRACES_SAMPLE_RATE": "1",
        "SHUTDOWN_TIMEOUT": "5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.bmp_listen_host == "::"
    assert s.bmp_listen_port == 1790
    assert s.db_host == "db.example.net" and not s.embedded_db
    assert s.db_port == 6432
    assert s.db_pool_size == 8
    assert s.batch_size == 20000
    assert s.batch_timeout == 0.25
    assert s.max_message_size == 1048576
    assert s.max_connections == 50
    assert s.stats_interval == 2.5
    assert s.route_retention == timedelta(hours=12)
    assert s.queue_size == 100
    assert (s.log_level, s.log_format) == ("DEBUG", "text")
    assert s.sentry_environment == "production"
    assert s.sentry_traces_sample_rate == 1.0
    assert s.shutdown_timeout == 5.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("1w2d", timedelta(days=9)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("3600s", timedelta(hours=1)),
        ("90", timedelta(days=90)),
        ("0", None),
        ("0d", None),
    ],
)
def test_route_retention(monkeypatch, text, expected):
    monkeypatch.setenv("ROUTE_RETENTION", text)
    assert load_settings().route_retention == expected


def test_empty_value_means_default(monkeypatch):
    monkeypatch.setenv("BMP_LISTEN_PORT", "")
    monkeypatch.setenv("SENTRY_DSN", "")
    s = load_settings()
    assert s.bmp_listen_port == 11019 and s.sentry_dsn == ""


def test_env_file_and_precedence(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text(
        "# comment\nBMP_LISTEN_PORT=12000\nDB_PASSWORD='s3cr3t pw'\nLOG_FORMAT=text\n"
    )
    monkeypatch.setenv("LOG_FORMAT", "json")  # the environment wins over the file
    s = load_settings()  # ./.env read by default
    assert s.bmp_listen_port == 12000
    assert s.db_password == "s3cr3t pw"
    assert s.log_format == "json"

    other = tmp_path / "other.env"
    other.write_text("BMP_LISTEN_PORT=13000\n")
    assert load_settings(other).bmp_listen_port == 13000


def test_env_file_does_not_touch_process_environment(tmp_path):
    (tmp_path / ".env").write_text("DB_PASSWORD=hunter22\n")
    assert load_settings().db_password == "hunter22"
    import os

    assert "DB_PASSWORD" not in os.environ


def test_missing_explicit_env_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.env")
    assert "nope.env" in str(info.value)


# One row per kind of bad value: the exact one-line message.
BAD_VALUES = [
    ("BMP_LISTEN_PORT", "abc", "BMP_LISTEN_PORT='abc': expected an integer from 1 to 65535"),
    ("BMP_LISTEN_PORT", "0", "BMP_LISTEN_PORT='0': expected an integer from 1 to 65535"),
    ("BMP_LISTEN_PORT", "70000", "BMP_LISTEN_PORT='70000': expected an integer from 1 to 65535"),
    ("DB_PORT", "5432.5", "DB_PORT='5432.5': expected an integer from 1 to 65535"),
    ("BMP_LISTEN_HOST", "not a host!", "BMP_LISTEN_HOST='not a host!': expected an IP "
     "address or a host name"),
    ("DB_POOL_SIZE", "65", "DB_POOL_SIZE='65': expected an integer from 1 to 64"),
    ("BATCH_SIZE", "-1", "BATCH_SIZE='-1': expected an integer from 1 to 1000000"),
    ("BATCH_TIMEOUT", "0", "BATCH_TIMEOUT='0': expected a number of seconds greater than 0 "
     "and at most 60"),
    ("BATCH_TIMEOUT", "nan", "BATCH_TIMEOUT='nan': expected a number of seconds greater "
     "than 0 and at most 60"),
    ("STATS_INTERVAL", "soon", "STATS_INTERVAL='soon': expected a number of seconds greater "
     "than 0 and at most 86400"),
    ("SHUTDOWN_TIMEOUT", "-5", "SHUTDOWN_TIMEOUT='-5': expected a number of seconds greater "
     "than 0 and at most 3600"),
    ("MAX_MESSAGE_SIZE", "4096", "MAX_MESSAGE_SIZE='4096': expected an integer from 131072 "
     "to 67108864"),
    ("MAX_CONNECTIONS", "0", "MAX_CONNECTIONS='0': expected an integer from 1 to 100000"),
    ("QUEUE_SIZE", "lots", "QUEUE_SIZE='lots': expected an integer from 1 to 10000"),
    ("ROUTE_RETENTION", "90 days", "ROUTE_RETENTION='90 days': expected a duration like 90d, "
     "12h, 30m, 1w2d or a number of days, at most 100 years; 0 keeps history forever"),
    ("ROUTE_RETENTION", "40000", None),
    ("ROUTE_RETENTION", "-1d", None),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD': expected one of DEBUG, INFO, WARNING, ERROR, "
     "CRITICAL"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': expected one of json, text"),
    ("SENTRY_TRACES_SAMPLE_RATE", "1.5", "SENTRY_TRACES_SAMPLE_RATE='1.5': expected a number "
     "from 0.0 to 1.0"),
    ("SENTRY_ENVIRONMENT", "a/b", "SENTRY_ENVIRONMENT='a/b': expected a name of 1 to 64 "
     "characters without '/'"),
    ("DB_USER", "x" * 64, None),
    ("DATABASE_URL", "mysql://root@db/x", "DATABASE_URL='mysql://root@db/x': expected a URL "
     "like postgresql://user:password@host:5432/dbname"),
    ("DATABASE_URL", "postgresql://u@h:99999/db", None),
]


@pytest.mark.parametrize("name, value, message", BAD_VALUES)
def test_bad_value_is_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{name}=")
    assert info.value.name == name
    if message is not None:
        assert text == message


@pytest.mark.parametrize("url, shown", [
    ("mysql://root:topsecret@db/x", "mysql://root:***@db/x"),
    ("root:topsecret@db/x", "root:***@db/x"),
    ("postgresql://root:topsecret@db:99999/x", "postgresql://root:***@db:99999/x"),
])
def test_bad_database_url_error_hides_password(monkeypatch, url, shown):
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "topsecret" not in str(info.value)
    assert str(info.value).startswith(f"DATABASE_URL={shown!r}: expected")


def test_cli_helper_exits_2_with_one_line(tmp_path):
    code = "from pybmpmon.config import load_settings_or_exit; load_settings_or_exit()"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "BMP_LISTEN_PORT": "abc"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert "BMP_LISTEN_PORT='abc': expected an integer from 1 to 65535" in lines[0]


def test_dsn_from_db_variables(monkeypatch):
    monkeypatch.setenv("DB_HOST", "db.example.net")
    monkeypatch.setenv("DB_PORT", "6432")
    monkeypatch.setenv("DB_USER", "bmp")
    monkeypatch.setenv("DB_PASSWORD", "it's a secret")
    monkeypatch.setenv("DB_NAME", "routes")
    s = load_settings()
    assert s.db_params() == {"host": "db.example.net", "port": 6432, "user": "bmp",
                             "dbname": "routes", "password": "it's a secret"}
    assert s.dsn == ("application_name=pybmpmon host=db.example.net port=6432 user=bmp "
                     "dbname=routes password='it\\'s a secret'")
    assert s.db_display == "postgresql://bmp@db.example.net:6432/routes"


def test_dsn_from_database_url_overrides_db_variables(monkeypatch):
    monkeypatch.setenv("DB_HOST", "ignored.example")
    monkeypatch.setenv("DB_PASSWORD", "ignored")
    monkeypatch.setenv("DATABASE_URL",
                       "postgresql://bmp%40x:p%40ss@[2001:db8::1]:6543/routes?sslmode=require")
    s = load_settings()
    assert s.db_params() == {"host": "2001:db8::1", "port": 6543, "user": "bmp@x",
                             "password": "p@ss", "dbname": "routes", "sslmode": "require"}
    assert "password=p@ss" in s.dsn and "sslmode=require" in s.dsn
    assert s.db_display == "postgresql://bmp%40x@[2001:db8::1]:6543/routes"
    assert "p@ss" in s.secrets


def test_dsn_is_accepted_by_libpq(monkeypatch):
    psycopg2_extensions = pytest.importorskip("psycopg2.extensions")
    monkeypatch.setenv("DB_HOST", "db.example.net")
    monkeypatch.setenv("DB_PASSWORD", "a b'c\\d")
    s = load_settings()
    parsed = psycopg2_extensions.parse_dsn(s.dsn)
    assert parsed["password"] == "a b'c\\d"
    assert parsed["host"] == "db.example.net"
    assert parsed["application_name"] == "pybmpmon"


def test_embedded_database_dsn_has_no_host():
    s = load_settings()
    assert s.embedded_db
    assert "host" not in s.db_params()
    assert s.db_display == "postgresql://pybmpmon@/pybmpmon"
    launched = dataclasses.replace(s, db_host="/tmp/pg-sock", db_port=55432)
    assert "host=/tmp/pg-sock port=55432" in launched.dsn


def test_repr_and_log_fields_hide_secrets(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "pw-one-xyz")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-two-xyz@h/db")
    monkeypatch.setenv("SENTRY_DSN", "https://dsnkey123@o0.ingest.sentry.io/42")
    s = load_settings()
    for text in (repr(s), str(s), str(s.log_fields()), s.db_display):
        assert "pw-one-xyz" not in text
        assert "pw-two-xyz" not in text
        assert "dsnkey123" not in text
    fields = s.log_fields()
    assert fields["db_password"] == "***"
    assert fields["database_url"] == "postgresql://u:***@h/db"
    assert fields["sentry_dsn"] == "https://***@o0.ingest.sentry.io/42"
    assert fields["route_retention"] == 90 * 86400
    assert set(s.secrets) == {"pw-one-xyz", "pw-two-xyz", "dsnkey123"}


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bmp_listen_port = 1  # type: ignore[misc]


def test_env_example_lists_every_variable_with_its_default():
    text = config.render_env_example()
    assignments = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert assignments == {s.name: s.default for s in SETTINGS}
    # And the rendered example loads back to the defaults.
    Path(".env").write_text(text)
    assert load_settings() == Settings()


def test_shipped_env_example_matches_table():
    """.env.example names every variable with a value that parses to its default
    ("#NAME=" declares a variable left empty)."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and "=" in line and " " not in line:
            line = line[1:]
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    assert sorted(found) == sorted(s.name for s in SETTINGS)
    for setting in SETTINGS:
        assert setting.parse(found[setting.name]) == setting.parse(""), setting.name
