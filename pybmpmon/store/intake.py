"""The writer's intake: a bounded, ranked, fair queue of router submissions.

A submission is ``(kind, router_ip, events, time)`` with kind "events",
"connect" or "disconnect".  Router greenlets put; the writer's batcher takes.

Strategy (issue 4: no router starved, a new router's Peer Up stored at once):

- Bounded: ``max_pending`` submissions wait at most; a router putting into a
  full queue blocks, stops reading its socket, and TCP pushes back on it.
- Fair: slots go strictly first come, first served (:class:`FairSlots`), so
  the router being read cannot keep taking the slot another one waits for.
- Ranked: a submission without routes (connect, Initiation, Peer Up,
  statistics, Termination) may take the writer's *lane*; it is taken before
  the others and has slots of its own, unless its router has earlier
  submissions still waiting in turn: each router's submissions are taken in
  the order they came.
- Control items (the writer's flush and stop markers) wait in turn without a
  slot, so they come after everything queued before them.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from typing import Optional

import gevent.event
import gevent.queue

from pybmpmon.bmp.model import Initiation, PeerUp, RouteMirroring, StatisticsReport, Termination

_LANE_FIRST, _IN_TURN = 0, 1  # ranks: lane-bound submissions are taken first
# Events that touch only their router's own rows (routers, bgp_peers) and
# append-only tables: they may take the lane.  Not route_state.
LANE_EVENTS = frozenset({Initiation, PeerUp, StatisticsReport, Termination, RouteMirroring})


def lane_kind(item) -> bool:
    """Whether a submission is of a kind the lane takes: a connect, or events without routes."""
    kind, _router_ip, events, _at = item
    if kind == "events":
        return all(type(event) in LANE_EVENTS for event in events)
    return kind == "connect"


class FairSlots:
    """``size`` slots handed out strictly first come, first served.

    gevent's semaphores let a running greenlet take a slot just released for
    a waiting one; under load the router being read keeps winning and the
    others starve.  Here a released slot goes straight to the oldest waiter.
    """

    def __init__(self, size: int):
        self._free = size
        self._waiters: deque = deque()

    def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted = gevent.event.Event()
        self._waiters.append(granted)
        try:
            granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # handed over meanwhile: pass it on
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1


class Intake:
    """Submissions waiting for the batcher; ``lane``: whether lane-bound ones rank first."""

    def __init__(self, max_pending: int, lane: bool):
        self.lane = lane
        # (rank, arrival, item, holds a slot)
        self._queue: gevent.queue.PriorityQueue = gevent.queue.PriorityQueue()
        self._arrival = itertools.count()
        self._slots = FairSlots(max_pending)
        self._lane_slots = FairSlots(max_pending)
        self._queued: Counter = Counter()  # router_ip -> its submissions waiting in turn

    def put(self, item) -> None:
        """Queue a submission; blocks while ``max_pending`` of its rank wait."""
        router_ip = item[1]
        if self.lane and not self._queued[router_ip] and lane_kind(item):
            self._lane_slots.acquire()
            self._queue.put((_LANE_FIRST, next(self._arrival), item, True))
            return
        self._queued[router_ip] += 1  # before blocking: its next submission must wait too
        try:
            self._slots.acquire()
        except BaseException:
            self._taken(router_ip)
            raise
        self._queue.put((_IN_TURN, next(self._arrival), item, True))

    def put_control(self, item) -> None:
        """Queue a marker of the writer's own, after everything queued so far; never blocks."""
        self._queue.put((_IN_TURN, next(self._arrival), item, False))

    def lane_bound_next(self) -> bool:
        try:
            return self._queue.peek_nowait()[0] == _LANE_FIRST
        except gevent.queue.Empty:
            return False

    def take(self, timeout: float) -> Optional[tuple]:
        """The next item, lane-bound submissions first; None after ``timeout``."""
        try:
            rank, _arrival, item, slotted = self._queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return None
        if rank == _LANE_FIRST:
            self._lane_slots.release()
        elif slotted:
            self._slots.release()
            self._taken(item[1])
        return item

    def _taken(self, router_ip: str) -> None:
        self._queued[router_ip] -= 1
        if not self._queued[router_ip]:
            del self._queued[router_ip]

    def __len__(self) -> int:
        return self._queue.qsize()

    def waiting(self) -> list:
        """The items waiting, in no particular order."""
        return [entry[2] for entry in list(self._queue.queue)]
