"""PostgreSQL storage: schema migrations, connection pool, batching writer.

Public entry points:

- :func:`migrate` (``pybmpmon migrate`` and start-up): bring a database to the
  newest schema, return its version.
- :class:`Writer`: the batching writer the collector feeds with decoded events.
- :class:`LocalPostgres`: a private server in a directory (tests, ``make run``).

The store knows rows, not sockets or BMP framing.
"""

from pybmpmon.store.migrate import current_version, latest_version, migrate

__all__ = ["migrate", "current_version", "latest_version", "Writer", "LocalPostgres"]


def __getattr__(name):
    # Imported lazily: `pybmpmon migrate` should not pull in gevent.
    if name == "Writer":
        from pybmpmon.store.writer import Writer

        return Writer
    if name == "LocalPostgres":
        from pybmpmon.store.localpg import LocalPostgres

        return LocalPostgres
    raise AttributeError(name)
