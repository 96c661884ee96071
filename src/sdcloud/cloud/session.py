"""One call for ``sdcloud serve``: a :class:`SessionGuard` set up from the settings and the
machine -- price per hour (``--price-per-hour``, else the catalog's price for the detected
platform and GPU), ``--budget``, ``--max-hours`` and the platform's session limit.

Platform ids are the catalog's provider names (colab, paperspace, runpod, vast, studio-lab).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from sdcloud.cloud.meter import Clock, CostMeter, SessionGuard, catalog_price, platform_limit_s, uptime_s
from sdcloud.cloud.platforms import detect
from sdcloud.cloud.price_catalog import PriceCatalog, load_price_catalog
from sdcloud.cloud.system import SystemProbe
from sdcloud.settings import Settings


def session_guard_for(
    settings: Settings,
    *,
    currency: str = "USD",
    on_warn: Callable[[str, float], None] | None = None,
    drain_jobs: Callable[[float], bool] | None = None,
    flush_outbox: Callable[[float], bool] | None = None,
    exit: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    root: Path | str = "/",
    probe: SystemProbe | None = None,
    catalog: PriceCatalog | None = None,
    clock: Clock | None = None,
) -> SessionGuard:
    """``clock`` (monotonic seconds) replaces ``time.monotonic`` for the meter (tests)."""
    env = os.environ if env is None else env
    detected = detect(env, root)
    price, source = settings.price_per_hour, "--price-per-hour"
    if price is None:
        price, source = None, "unknown: pass --price-per-hour to see spend"
        gpus = (probe or SystemProbe(root)).gpus()
        cat = catalog or load_price_catalog()
        gpu = cat.gpu_for_device_name(gpus[0].name) if gpus else None
        found = catalog_price(cat, detected.id, gpu, currency) if gpu else None
        if found:
            price, source = found
    meter = CostMeter(price, currency, source) if clock is None else CostMeter(price, currency, source, clock=clock)
    return SessionGuard(
        meter,
        budget=settings.budget,
        max_hours=settings.max_hours,
        platform_limit_s=platform_limit_s(detected, uptime_s(root)),
        platform_name=detected.profile.name,
        on_warn=on_warn,
        drain_jobs=drain_jobs,
        flush_outbox=flush_outbox,
        exit=exit,
        log=log,
    )
