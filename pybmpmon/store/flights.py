"""Main batches in the database: two at once, committed in order; isolating bad content.

Runs on the gevent hub's native threads (see writer.py, which decides what
to send).  Each attempt at a batch tells its :class:`Progress` (merged,
done, committed or not) to the attempt at the batch after it, which waits
at the points :meth:`Store.apply` offers (its hooks):

- before merging, for the batch before to be merged, unless the two may
  merge side by side (:func:`may_overlap`);
- before the rows both may write (attribute sets, routers, peers), for the
  batch before to be merged;
- before COMMIT, for the batch before to be committed.  If it failed, this
  one rolls back ("superseded") and is applied again after it.

No attempt ever waits for a row lock of the attempt after it, which waits
for it: that would hang both, and PostgreSQL cannot see the second wait.
"""

from __future__ import annotations

import logging
import uuid
from typing import Optional

import psycopg2
from gevent.monkey import get_original

from pybmpmon.store.database import Store
from pybmpmon.store.pool import is_connection_error
from pybmpmon.store.rows import Batch, BatchBuilder, Segment

# The writer's logger: what this module logs is the writer's doing.
log = logging.getLogger("pybmpmon.store.writer")

# A lock of the operating system even after gevent's monkey-patching: the
# signals below pass between the pool's native threads, where gevent's
# locks would not work.
_allocate_lock = get_original("_thread", "allocate_lock")
# Seconds a batch merged alongside the one before waits for it to finish its
# merge before giving up its own work (see attempt).
OVERLAP_PATIENCE = 10.0
# Seconds a batch waits for the one before to commit before rolling back: a
# bound on the one wait that could otherwise hang both, should the batch
# before, refused at its COMMIT, go on in halves that need this one's rows.
COMMIT_PATIENCE = 60.0


class Signal:
    """A one-shot event between native threads; set only by the thread that owns it."""

    __slots__ = ("_lock", "_set")

    def __init__(self):
        self._lock = _allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float = -1) -> bool:
        """True once set; False if ``timeout`` seconds passed first."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True


class Progress:
    """How far one attempt at a batch got, for the attempt at the batch after it."""

    __slots__ = ("merged", "done", "ok")

    def __init__(self):
        self.merged = Signal()  # all but the COMMIT done, or the attempt is over
        self.done = Signal()  # the attempt is over
        self.ok = False  # set before done: the batch is committed (or was already)


class Flight:
    """A batch on a native thread: the batch, the store applying it, the pending
    result, and the progress of the current attempt."""

    __slots__ = ("batch", "store", "result", "progress")

    def __init__(self, batch: Batch, store: Store):
        self.batch = batch
        self.store = store
        self.result = None
        self.progress: Optional[Progress] = None

    @property
    def failed(self) -> bool:
        return self.result.ready() and not self.result.successful()


def may_overlap(earlier: Batch, batch: Batch, scopes_stored: set) -> bool:
    """Whether ``batch`` may merge while ``earlier`` (the batch before) still merges.

    Only when neither can wait for a row lock the other holds: both
    carry routes only (no operation: Peer Down and sweeps update whole
    scopes, peers and routers rows are shared), no route key is in both,
    and every scope of ``batch`` is in ``scopes_stored`` (written by
    committed batches: a new scope is an insert both could make).  The rows
    both may write (attribute sets, routers, peers) wait anyway (see
    :func:`attempt`).
    """
    keys: dict = {}
    for part in earlier.parts:
        if not isinstance(part, Segment):
            return False
        for scope, routes in part.gens.items():
            keys.setdefault(scope, []).append(routes)
    for part in batch.parts:
        if not isinstance(part, Segment):
            return False
        for scope, routes in part.gens.items():
            if scope not in scopes_stored:
                return False
            for other in keys.get(scope, ()):
                if not routes.keys().isdisjoint(other):
                    return False
    return True


def attempt(batch: Batch, store: Store, max_gen: int, progress: Progress,
            before: Optional[Progress], parallel: bool = False) -> dict:
    """One attempt at ``batch``, told as ``progress``, after the attempt ``before``.

    Order (see Writer._dispatch): the merge starts once the batch before
    is merged (its rows and locks are in place: a key it holds is waited
    for), or at once when ``parallel`` (:func:`may_overlap`: nothing to
    wait for); the rows both may write come once the batch before is
    merged, the COMMIT once it is committed.  If the batch before failed,
    this one is rolled back ("superseded") and the batcher applies it
    again after the retried one.  A parallel batch also gives up when the
    batch before takes longer than OVERLAP_PATIENCE to merge: should it
    wait for a lock of this one after all, the rollback frees it.
    """
    def failed() -> bool:
        return before.done.is_set() and not before.ok

    def before_merge() -> bool:
        if not parallel:
            before.merged.wait()
        return not failed()

    def before_shared() -> bool:
        return before.merged.wait(OVERLAP_PATIENCE) and not failed()

    def before_commit() -> bool:
        progress.merged.set()  # the batch after may go on now
        if before is None:
            return True
        return before.done.wait(COMMIT_PATIENCE) and before.ok

    hooks = {"before_commit": before_commit}
    if before is not None:
        hooks.update(before_merge=before_merge, before=before)
        if parallel:
            hooks["before_shared"] = before_shared
    try:
        outcome = apply_isolating(batch, store, max_gen, **hooks)
        progress.ok = not outcome.get("superseded")
        return outcome
    finally:
        progress.merged.set()
        progress.done.set()


def apply_isolating(batch: Batch, store: Store, max_gen: int, before_merge=None,
                    before_commit=None, before: Optional[Progress] = None,
                    before_shared=None) -> dict:
    """Apply ``batch`` with ``store``; if its content is rejected, split until
    the culprit is alone.

    Connection errors propagate (the batcher retries the whole batch).
    """
    error = None
    for _ in range(2):
        try:
            return store.apply(batch, before_merge, before_commit, before_shared)
        except psycopg2.Error as exc:
            if is_connection_error(exc):
                raise
            error = exc
            # Once more with fresh knowledge of the database (a partition
            # dropped behind our back, say) before blaming the content.
            store.forget()
    if before is not None:
        # The halves below commit one by one: not before the batch before.
        before.done.wait()
        if not before.ok:
            return {"superseded": True}
    halves = split(batch.items)
    if halves is None:
        log.error("route_processing_error",
                  extra={"route_count": batch.route_count, "error": str(error).strip(),
                         "error_type": type(error).__name__, "dropped": True})
        return {"dropped": batch.route_count}
    dropped = 0
    for number, half in enumerate(halves):
        builder = BatchBuilder(max_gen=max_gen)
        for item in half:
            builder.add_item(item)
        # Derived ids: if the connection fails after the first half was
        # committed, the retry of the whole batch skips that half.
        half_id = str(uuid.uuid5(uuid.UUID(batch.batch_id), str(number)))
        dropped += apply_isolating(builder.take(half_id), store, max_gen).get("dropped", 0)
    return {"dropped": dropped}


def split(items: list):
    """Two halves of a batch's submissions, splitting one submission's events if alone."""
    if len(items) > 1:
        middle = len(items) // 2
        return items[:middle], items[middle:]
    kind, router_ip, events, at = items[0]
    if kind == "events" and len(events) > 1:
        middle = len(events) // 2
        return ([(kind, router_ip, events[:middle], at)],
                [(kind, router_ip, events[middle:], at)])
    return None
