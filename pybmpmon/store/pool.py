"""A small pool of ordinary (blocking) psycopg2 connections.

Strategy: the writer runs every database call on a native thread, one job at
a time, so the pool needs no locking of its own; what it must guarantee is
that a connection coming back from a failed transaction is never reused
dirty: :meth:`ConnectionPool.put` rolls back an open or failed transaction and
closes a broken connection instead of keeping it.  No green wait callback is
ever installed: psycopg2 refuses COPY on such connections.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Optional

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

# Errors that mean the connection (or the server) is gone rather than that a
# statement was wrong.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable (retry later)."""
    if isinstance(exc, CONNECTION_ERRORS):
        # A statement timeout or a deadlock are OperationalErrors as well, but
        # the server is there: they are errors of the statement.
        code = getattr(exc, "pgcode", None)
        return code is None or code.startswith("08") or code.startswith("57P")
    return False


def leaves_connection_broken(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must be closed rather than rolled back
    and reused: the server is gone, or the failure was not the database's (an
    interrupted COPY, say) and the connection's state is unknown."""
    return is_connection_error(exc) or not isinstance(exc, psycopg2.Error)


class ConnectionPool:
    """Up to ``size`` idle connections to ``dsn``, made on demand.

    ``setup`` runs on every new connection (session settings, temp tables).
    """

    def __init__(self, dsn: str, size: int = 2, setup: Optional[Callable] = None,
                 connect_timeout: int = 5, application_name: str = "pybmpmon"):
        self.dsn = dsn
        self.size = size
        self.setup = setup
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._idle: list = []
        self.created = 0
        self.discarded = 0

    def _connect(self):
        conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout,
                                application_name=self.application_name,
                                keepalives=1, keepalives_idle=30, keepalives_interval=10,
                                keepalives_count=3)
        if self.setup is not None:
            try:
                self.setup(conn)
                conn.commit()
            except Exception:
                conn.close()
                raise
        self.created += 1
        return conn

    def get(self):
        """An idle connection in no transaction, or a new one."""
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                self.discarded += 1
                continue
            if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                self._discard(conn)  # should not happen: put() cleans up
                continue
            return conn
        return self._connect()

    def put(self, conn, broken: bool = False) -> None:
        """Give ``conn`` back; ``broken`` (or any doubt about it) closes it."""
        if conn.closed:
            self.discarded += 1
            return
        if not broken:
            try:
                status = conn.info.transaction_status
                if status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    conn.rollback()
                broken = conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
            except psycopg2.Error:
                broken = True
        if broken or len(self._idle) >= self.size:
            self._discard(conn)
        else:
            self._idle.append(conn)

    def _discard(self, conn) -> None:
        self.discarded += 1
        try:
            conn.close()
        except psycopg2.Error:
            pass

    @contextmanager
    def connection(self, conn=None):
        """A connection for one unit of work: rolled back on error, dropped if broken.

        ``conn``: one taken with :meth:`get` earlier, handed to this unit of work.
        """
        if conn is None:
            conn = self.get()
        try:
            yield conn
        except BaseException as exc:
            self.put(conn, broken=leaves_connection_broken(exc))
            raise
        else:
            self.put(conn)

    def close(self) -> None:
        while self._idle:
            self._discard(self._idle.pop())
