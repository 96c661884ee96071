"""The one owner of the GPU: whoever computes on it holds it, by priority.

Generation and model switches hold it as ``INTERACTIVE`` (someone is waiting for the image);
long jobs (training, checkpoint tools on CUDA) hold it as ``BACKGROUND`` and call
``yield_point()`` between their steps, where a waiting ``INTERACTIVE`` user gets the GPU
first. So a short txt2img waits at most one training step, not the whole run. Within one
priority the GPU goes to users in the order they asked. Holding is re-entrant per thread
(loading a model inside a generation).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

INTERACTIVE = 0
BACKGROUND = 10


class GpuOwner:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._priority = INTERACTIVE
        self._waiting: list[tuple[int, int, int]] = []  # (priority, arrival, thread) heap
        self._arrival = itertools.count()

    @contextmanager
    def hold(self, priority: int = INTERACTIVE) -> Iterator[None]:
        """Hold the GPU for the ``with`` block (waits while another thread holds it)."""
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def acquire(self, priority: int = INTERACTIVE) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            self._wait_turn(me, priority)
            self._depth = 1

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("the GPU is released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def yield_point(self) -> bool:
        """Between steps of a long job: if a more urgent user waits, let it run first, then
        take the GPU back. Returns True when the GPU was handed over."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me or not self._waiting or self._waiting[0][0] >= self._priority:
                return False
            depth, priority = self._depth, self._priority
            self._owner, self._depth = None, 0
            self._cond.notify_all()
            self._wait_turn(me, priority)
            self._depth = depth
            return True

    @property
    def waiting(self) -> int:
        """How many users wait for the GPU now."""
        with self._cond:
            return len(self._waiting)

    def _wait_turn(self, me: int, priority: int) -> None:
        entry = (priority, next(self._arrival), me)
        heapq.heappush(self._waiting, entry)
        while self._owner is not None or self._waiting[0] is not entry:
            self._cond.wait()
        heapq.heappop(self._waiting)
        self._owner, self._priority = me, priority
        self._cond.notify_all()  # the next in line re-checks (it may be the new head)
