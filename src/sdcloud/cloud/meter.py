"""The live cost meter and the session guard that stops the server before money or work is lost.

``CostMeter`` knows the price per hour and the start time and reports elapsed time and spend.
``SessionGuard`` watches three limits -- ``--budget``, ``--max-hours`` and the platform's own
session limit (Colab 12 h, Studio Lab 4 h) -- and, for the earliest one:

1. ``warn_before_s`` (15 min) before it, calls ``on_warn(message, seconds_left)`` once;
2. ``stop_margin_s`` before it, runs the graceful stop: ``drain_jobs(timeout_s)`` (stop taking
   jobs, finish or checkpoint the running one; queued jobs stay in the journal),
   ``flush_outbox(timeout_s)`` (every made image reaches the persistent store), then
   ``exit(code)``.

The server supplies the callbacks and calls :meth:`SessionGuard.tick` periodically (or runs
:meth:`SessionGuard.run` in a thread). Clocks are injectable so tests run in no time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdcloud.cloud.platforms import Detected
from sdcloud.cloud.price_catalog import PriceCatalog

Clock = Callable[[], float]

WARN_BEFORE_S = 15 * 60
STOP_MARGIN_S = 5 * 60


@dataclass
class CostMeter:
    """Elapsed time and spend since ``start`` (a reading of ``clock``)."""

    price_per_hour: float | None
    currency: str = "USD"
    price_source: str = ""
    clock: Clock = time.monotonic
    wall_clock: Clock = time.time
    start: float | None = None
    _started_wall: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.price_per_hour is not None and not self.price_per_hour >= 0:
            raise ValueError("price_per_hour must be >= 0")
        if self.start is None:
            self.start = self.clock()
        self._started_wall = self.wall_clock() - (self.clock() - self.start)

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.clock() - float(self.start or 0.0))

    @property
    def spend(self) -> float | None:
        if self.price_per_hour is None:
            return None
        return self.price_per_hour * self.elapsed_s / 3600

    def snapshot(self) -> dict[str, Any]:
        spend = self.spend
        return {
            "started_at": datetime.fromtimestamp(self._started_wall, timezone.utc).isoformat(
                timespec="seconds"
            ),
            "elapsed_s": round(self.elapsed_s, 1),
            "price_per_hour": self.price_per_hour,
            "currency": self.currency,
            "spend": None if spend is None else round(spend, 4),
            "price_source": self.price_source,
        }


@dataclass(frozen=True)
class Limit:
    reason: str  # "budget" | "max_hours" | "platform"
    at_s: float  # seconds after the meter's start
    message: str


class SessionGuard:
    """Warns before the earliest limit and stops the server gracefully before it."""

    def __init__(
        self,
        meter: CostMeter,
        *,
        budget: float | None = None,
        max_hours: float | None = None,
        platform_limit_s: float | None = None,
        platform_name: str = "the platform",
        warn_before_s: float = WARN_BEFORE_S,
        stop_margin_s: float = STOP_MARGIN_S,
        on_warn: Callable[[str, float], None] | None = None,
        drain_jobs: Callable[[float], bool] | None = None,
        flush_outbox: Callable[[float], bool] | None = None,
        exit: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.meter = meter
        self.warn_before_s = warn_before_s
        self.stop_margin_s = stop_margin_s
        self._on_warn = on_warn
        self._drain = drain_jobs
        self._flush = flush_outbox
        self._exit = exit
        self._log = log or (lambda msg: None)
        self.state = "running"  # running -> warned -> stopping -> stopped
        self.warning: str | None = None
        self.stop_reason: str | None = None
        self.stop_result: dict[str, bool] = {}
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self.limits = self._limits(budget, max_hours, platform_limit_s, platform_name)

    def _limits(
        self,
        budget: float | None,
        max_hours: float | None,
        platform_limit_s: float | None,
        platform_name: str,
    ) -> list[Limit]:
        limits: list[Limit] = []
        price = self.meter.price_per_hour
        if budget is not None:
            if price is None:
                self.notes.append("a budget is set but the price per hour is unknown: pass --price-per-hour")
            elif price > 0:
                limits.append(
                    Limit(
                        "budget",
                        budget / price * 3600,
                        f"budget {budget:g} {self.meter.currency} at {price:g}/h",
                    )
                )
        if max_hours is not None:
            limits.append(Limit("max_hours", max_hours * 3600, f"--max-hours {max_hours:g}"))
        if platform_limit_s is not None:
            start_offset = self.meter.elapsed_s
            limits.append(
                Limit("platform", platform_limit_s + start_offset, f"{platform_name}'s session limit")
            )
        return sorted(limits, key=lambda lim: lim.at_s)

    @property
    def next_limit(self) -> Limit | None:
        return self.limits[0] if self.limits else None

    def seconds_left(self) -> float | None:
        lim = self.next_limit
        return None if lim is None else lim.at_s - self.meter.elapsed_s

    def tick(self) -> str:
        """Check the clock; warn or stop as due. Returns the state."""
        left = self.seconds_left()
        lim = self.next_limit
        if left is None or lim is None or self.state in ("stopping", "stopped"):
            return self.state
        if self.state == "running" and left <= self.warn_before_s:
            self.state = "warned"
            minutes = max(0, int(left // 60))
            self.warning = (
                f"{lim.message} is reached in {minutes} min: sdcloud will finish the running "
                f"job, flush the outbox and stop in {max(0, int((left - self.stop_margin_s) // 60))} min"
            )
            self._log(self.warning)
            if self._on_warn:
                self._on_warn(self.warning, left)
        if left <= self.stop_margin_s:
            self.stop(lim.reason)
        return self.state

    def stop(self, reason: str = "requested") -> None:
        """The graceful stop: drain jobs, flush the outbox, exit. Runs once."""
        with self._lock:
            if self.state in ("stopping", "stopped"):
                return
            self.state = "stopping"
        self.stop_reason = reason
        left = self.seconds_left()
        budget_s = max(30.0, left) if left is not None else 600.0
        self._log(f"stopping ({reason}): finishing the running job")
        drained = self._drain(budget_s * 0.6) if self._drain else True
        left = self.seconds_left()
        self._log("flushing the outbox to the persistent store")
        flushed = self._flush(max(30.0, left) if left is not None else 600.0) if self._flush else True
        self.stop_result = {"drained": bool(drained), "flushed": bool(flushed)}
        self.state = "stopped"
        self._log(
            f"stopped: jobs {'finished' if drained else 'NOT all finished'}, "
            f"outbox {'flushed' if flushed else 'NOT fully flushed'}"
        )
        if self._exit:
            self._exit(0 if drained and flushed else 3)

    def run(self, stop_event: threading.Event, poll_s: float = 5.0) -> None:
        """Tick every ``poll_s`` seconds until stopped or ``stop_event`` is set (for a daemon thread)."""
        while not stop_event.is_set() and self.tick() != "stopped":
            stop_event.wait(poll_s)

    def snapshot(self) -> dict[str, Any]:
        """What ``/api/session`` and the UI show."""
        out = self.meter.snapshot()
        left = self.seconds_left()
        lim = self.next_limit
        out.update(
            {
                "state": self.state,
                "limit": None
                if lim is None
                else {
                    "reason": lim.reason,
                    "description": lim.message,
                    "seconds_left": round(max(0.0, left or 0.0), 1),
                },
                "warning": self.warning,
                "stop_reason": self.stop_reason,
                "notes": list(self.notes),
            }
        )
        return out


# Helpers for serve -------------------------------------------------------------------------
def catalog_price(catalog: PriceCatalog, provider: str, gpu: str, currency: str) -> tuple[float, str] | None:
    """A price per hour for ``gpu`` at ``provider``: the cheapest non-preemptible offer, with a label."""
    best: tuple[float, str] | None = None
    for preemptible_ok in (False, True):
        for offer in catalog.offers:
            if offer.provider != provider or offer.banned or (offer.preemptible and not preemptible_ok):
                continue
            for g in offer.gpus:
                if g.gpu == gpu:
                    price = catalog.offer_hourly(offer, g, currency)
                    label = (
                        f"estimate from the catalog: {offer.provider} {offer.plan} {gpu} "
                        f"({g.date or offer.date}); pass --price-per-hour for your exact rate"
                    )
                    if best is None or price < best[0]:
                        best = (price, label)
        if best:
            return best
    return None


def uptime_s(root: Path | str = "/") -> float | None:
    """Seconds since the machine booted (/proc/uptime), the start of a Colab VM's 12 hours."""
    try:
        return float((Path(root) / "proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def platform_limit_s(detected: Detected, uptime: float | None) -> float | None:
    """Seconds left of the platform's session limit, counting from machine boot."""
    hours = detected.profile.session_limit_hours
    if hours is None:
        return None
    return max(0.0, hours * 3600 - (uptime or 0.0))
