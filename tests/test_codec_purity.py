"""The codec is pure: importing it pulls in no service dependency, and it does no I/O.

STYLE.md: "Codecs never import gevent, psycopg2, environs or sentry_sdk, and
never log: they raise."  The import check runs in a fresh interpreter, so what
other tests imported earlier cannot hide a dependency.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pybmpmon
import pybmpmon.bgp
import pybmpmon.bmp

REPO = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = ("gevent", "psycopg2", "sentry_sdk", "environs", "pythonjsonlogger")
# Besides the service packages: no logging, threads, processes or event loops.
FORBIDDEN_IMPORTS = SERVICE_PACKAGES + (
    "logging",
    "threading",
    "subprocess",
    "asyncio",
    "select",
    "selectors",
)
FORBIDDEN_CALLS = ("print", "open", "input", "exec", "eval")


def codec_modules() -> list:
    names = [f"pybmpmon.{name}" for name in ("errors", "iana", "session", "render")]
    if (REPO / "pybmpmon" / "reader.py").exists():
        names.append("pybmpmon.reader")
    for package in (pybmpmon.bgp, pybmpmon.bmp):
        names.append(package.__name__)
        names.extend(info.name for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."))
    return sorted(names)


CODEC = codec_modules()

PROBE = """
import json, sys
for name in {modules!r}:
    __import__(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_the_codec_modules_are_found():
    for name in (
        "pybmpmon.bgp.message",
        "pybmpmon.bgp.attributes",
        "pybmpmon.bgp.nlri",
        "pybmpmon.bgp.open",
    ):
        assert name in CODEC
    for name in (
        "pybmpmon.bmp.decode",
        "pybmpmon.bmp.framer",
        "pybmpmon.session",
        "pybmpmon.render",
    ):
        assert name in CODEC


def test_importing_the_codec_pulls_in_no_service_package():
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=CODEC)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(result.stdout))
    assert set(CODEC) <= loaded  # the probe really imported them
    # Only what the interpreter does not load by itself at start-up (it may load
    # threading, for one): the service packages and logging.
    for package in SERVICE_PACKAGES + ("logging",):
        offenders = sorted(m for m in loaded if m == package or m.startswith(package + "."))
        assert offenders == [], f"importing the codec loads {package}"


def _source(name: str) -> Path:
    parts = name.split(".")
    path = REPO.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def violations(source: str, filename: str = "<source>") -> list:
    """Forbidden imports and calls in a module's source, as readable strings."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported = [node.module or ""] if node.level == 0 else []
        else:
            imported = []
        found.extend(
            f"imports {module} (line {node.lineno})" for module in imported if module.split(".")[0] in FORBIDDEN_IMPORTS
        )
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"calls {node.func.id}() (line {node.lineno})")
    return found


@pytest.mark.parametrize("name", CODEC)
def test_no_io_in_the_source(name):
    path = _source(name)
    assert violations(path.read_text(), str(path)) == []


def test_the_source_check_can_fail():
    bad = (
        "import logging\nfrom gevent import sleep\nimport os, psycopg2.extras\nprint('x')\nwith open('f') as f: pass\n"
    )
    assert violations(bad) == [
        "imports logging (line 1)",
        "imports gevent (line 2)",
        "imports psycopg2.extras (line 3)",
        "calls print() (line 4)",
        "calls open() (line 5)",
    ]
