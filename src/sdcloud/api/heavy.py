"""Bounded pools for the heavy part of requests, so that no number of such requests can starve
the cheap routes (``/sdapi/v1/options``, ``/progress``) or each other.

Starlette runs sync routes on one shared pool of 40 threads; a burst of image uploads would
take all of them. Two lanes instead, each with at most ``workers`` running, at most ``queue``
more waiting, and the rest told 503 at once (retry later):

- ``app.state.heavy`` (``limits.heavy_workers``/``heavy_queue``): short CPU work, image
  decoding, PNG info and the validation of txt2img/img2img submits;
- ``app.state.long`` (``limits.long_workers``/``long_queue``): work that may take seconds to
  minutes, Extras upscaling and face restoration, interrogate, ControlNet detect, checkpoint
  inspect/hash and training dataset uploads/checks. Two long upscales cannot make a submit or
  a PNG Info wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sdcloud.errors import Busy

T = TypeVar("T")


class HeavyPool:
    def __init__(self, workers: int, queue: int, *, what: str = "image requests", setting: str = "heavy") -> None:
        self.workers = max(1, workers)
        self.capacity = self.workers + max(0, queue)
        self.what = what
        self.setting = setting
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"sdcloud-{setting}")
        self._in_hand = 0  # only touched on the event loop thread

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._in_hand >= self.capacity:
            raise Busy(
                f"the server is busy with {self._in_hand} {self.what} (limits.{self.setting}_workers + "
                f"limits.{self.setting}_queue); retry in a moment"
            )
        self._in_hand += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._in_hand -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
