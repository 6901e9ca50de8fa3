"""Misconfiguration stops ``pybmpmon serve`` with one line; ``pybmpmon check`` says
whether the database is ready (SPEC §8, §9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_service_support import database_url, free_port, service_env

BAD_VALUES = [  # (variable, value, text the one line must also hold)
    ("BMP_LISTEN_PORT", "70000", "from 1 to 65535"),  # out of range
    ("DB_PORT", "fivefourthreetwo", "an integer"),  # not an integer
    ("BATCH_SIZE", "1e3", "integer"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),  # not one of the choices
    ("LOG_FORMAT", "xml", "json"),
    ("ROUTE_RETENTION", "forever", "duration"),  # bad duration
    ("BATCH_TIMEOUT", "-1", "seconds"),  # bad number of seconds
    ("SHUTDOWN_TIMEOUT", "nan", "seconds"),
    ("DATABASE_URL", "mysql://collector@db.example/bmp", "postgresql://"),  # bad URL
    ("BMP_LISTEN_HOST", "not a host!", "address"),  # bad address
    ("SENTRY_TRACES_SAMPLE_RATE", "1.5", "0.0 to 1.0"),  # bad sample rate
    ("SENTRY_ENVIRONMENT", "prod/eu", "64 characters"),
    ("MAX_MESSAGE_SIZE", "1024", "131072"),
]


def run_cli(args: list, cwd: Path, timeout: float = 60, **env: str):
    return subprocess.run([sys.executable, "-m", "pybmpmon", *args], cwd=cwd,
                          env=service_env(**env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name, value, allowed", BAD_VALUES,
                         ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_a_bad_value_stops_serve_with_one_line(name, value, allowed, tmp_path):
    """Exit 2 before anything starts (no listener, no private database under ./var),
    nothing on stdout, exactly one line on stderr naming the variable, its value and
    what is allowed."""
    settings = {"BMP_LISTEN_HOST": "127.0.0.1", "BMP_LISTEN_PORT": str(free_port()),
                "DB_HOST": "127.0.0.1", name: value}
    done = run_cli(["serve"], tmp_path, **settings)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0] and value in lines[0] and allowed in lines[0], lines[0]
    assert not (tmp_path / "var").exists()


def test_a_bad_value_in_dot_env_names_the_variable(tmp_path):
    (tmp_path / ".env").write_text("LOG_LEVEL=INFO\nBMP_LISTEN_PORT=eleven\n")
    done = run_cli(["serve"], tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "BMP_LISTEN_PORT" in line and "eleven" in line


def test_a_bad_database_url_does_not_print_its_password(tmp_path):
    done = run_cli(["serve"], tmp_path, DATABASE_URL="mysql://collector:Hunter2-secret@db/bmp")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "DATABASE_URL" in line and "Hunter2-secret" not in line


def test_check_reports_a_ready_database(db_dsn, tmp_path):
    done = run_cli(["check"], tmp_path, DATABASE_URL=database_url(db_dsn))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reachable" in done.stdout and "schema version" in done.stdout


def test_check_fails_on_an_unreachable_database(tmp_path):
    done = run_cli(["check"], tmp_path, DB_HOST="127.0.0.1", DB_PORT=str(free_port()),
                   DB_PASSWORD="Hunter2-secret")
    assert done.returncode != 0
    assert "unreachable" in done.stdout
    assert "Hunter2-secret" not in done.stdout + done.stderr


def test_check_fails_on_a_database_without_the_schema(empty_db_dsn, tmp_path):
    done = run_cli(["check"], tmp_path, DATABASE_URL=database_url(empty_db_dsn))
    assert done.returncode != 0, done.stdout
    assert "migrate" in done.stdout


def test_check_with_a_bad_value_exits_2(tmp_path):
    done = run_cli(["check"], tmp_path, LOG_FORMAT="yaml")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "LOG_FORMAT" in line
