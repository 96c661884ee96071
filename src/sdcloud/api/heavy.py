"""A bounded pool for the CPU-heavy part of requests (image decoding, PNG info), so that no
number of such requests can starve the cheap routes (``/sdapi/v1/options``, ``/progress``).

Starlette runs sync routes on one shared pool of 40 threads; a burst of image uploads would
take all of them. Here at most ``limits.heavy_workers`` run at once, at most
``limits.heavy_queue`` more wait, and the rest are told 503 at once (retry later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sdcloud.errors import Busy

T = TypeVar("T")


class HeavyPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sdcloud-heavy")
        self._in_hand = 0  # only touched on the event loop thread

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._in_hand >= self.capacity:
            raise Busy(
                f"the server is busy with {self._in_hand} image requests (limits.heavy_workers + "
                "limits.heavy_queue); retry in a moment"
            )
        self._in_hand += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._in_hand -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
