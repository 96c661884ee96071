"""A ring of reusable memory for tensors on their way to disk.

A streamed merge produces ~2–7 GB of output tensors, each written and hashed by helper
threads and then dropped. Fresh memory for each one costs a page fault per 4 KiB (and on
cloud VMs that hand freed pages back to the host, a host fault too): on a 2-core VM that was
more CPU than the merge math. The writer consumes tensors in order, so their buffers can come
from one fixed ring: allocate at the head, free from the tail once written and hashed, wait
when the ring is full. The ring's pages are touched once; the resident set stays bounded.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ALIGN = 64  # bytes; every span starts on a cache line (and so on any dtype's size)


class Span:
    """One allocation in the ring: ``[start, end)`` bytes, done once released."""

    __slots__ = ("done", "end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end, self.done = start, end, False


class Arena:
    """Ring allocator over one ``capacity``-byte CPU buffer, allocated on first use.

    ``take`` returns a byte tensor viewing the ring (or None for requests over half the ring,
    which the caller allocates normally); ``release`` frees a span. Spans are freed in any
    order but their space comes back in allocation order, which is the writer's order anyway.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._mem: torch.Tensor | None = None
        self._live: deque[Span] = deque()
        self._cond = threading.Condition()

    def take(self, nbytes: int, timeout: float | None = None) -> tuple[torch.Tensor, Span] | None:
        """A ``nbytes`` uint8 view of the ring and its span; blocks while the ring is full
        (raises ``TimeoutError`` after ``timeout`` seconds, if given)."""
        import torch

        size = -(-nbytes // ALIGN) * ALIGN
        if nbytes <= 0 or size > self.capacity // 2:
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: self._fit(size) is not None, timeout):
                raise TimeoutError(f"no {size} contiguous bytes free in the ring")
            start = self._fit(size)
            assert start is not None
            span = Span(start, start + size)
            self._live.append(span)
            if self._mem is None:
                self._mem = torch.empty(self.capacity, dtype=torch.uint8)
            mem = self._mem
        return mem[start:start + nbytes], span

    def release(self, span: Span) -> None:
        with self._cond:
            span.done = True
            while self._live and self._live[0].done:
                self._live.popleft()
            self._cond.notify_all()

    def _fit(self, size: int) -> int | None:
        if not self._live:
            return 0
        first, end = self._live[0].start, self._live[-1].end
        if end > first:  # used [first, end): free at the tail end, or wrap to the front
            if self.capacity - end >= size:
                return end
            return 0 if first >= size else None
        return end if first - end >= size else None  # wrapped: free [end, first)
