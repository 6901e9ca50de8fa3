"""Helpers of the C accelerators' tests (test_fastpath*.py, test_rowpath.py)."""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[1] / "bench")


def synth():
    """bench/synth.py, the synthetic table's generator."""
    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module("synth")
    finally:
        sys.path.remove(BENCH)


def assert_no_leaks(run, watched: list, rounds: int = 5, slack: int = 50) -> None:
    """``run()`` repeated ``rounds`` times (after one warm-up) returns every
    allocated block but ``slack``, and leaves the reference counts of the
    ``watched`` objects as they were."""
    run()
    gc.collect()
    blocks = sys.getallocatedblocks()
    counts = [sys.getrefcount(obj) for obj in watched]
    for _ in range(rounds):
        run()
    gc.collect()
    assert [sys.getrefcount(obj) for obj in watched] == counts
    assert sys.getallocatedblocks() - blocks < slack
