"""Helpers of the writer's tests (test_store_writer.py, test_store_flights.py)."""

from __future__ import annotations

import psycopg2

ROUTER = "10.0.0.1"


def prefixes(count, start=0):
    return [f"{10 + (i >> 16) % 100}.{(i >> 8) & 255}.{i & 255}.0/24"
            for i in range(start, start + count)]


def scalar(dsn, query, *params):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]
