"""The Workers panel (Queue tab): who is connected to the broker, what they hold, their job,
cost per hour and images per hour. Empty in single-box mode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

HEADERS = ["Worker", "GPU", "VRAM", "Holds", "Job", "Jobs done", "Failed", "Images/hour", "Cost/hour"]


def worker_rows(workers: Iterable[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for w in workers:
        rate = w.get("images_per_hour")
        price = w.get("cost_per_hour")
        rows.append([
            w.get("name", ""),
            w.get("gpu", ""),
            f"{w['vram_gb']} GB" if w.get("vram_gb") else "",
            ", ".join(k.split(":", 1)[-1] if k.startswith("name:") else k for k in w.get("models") or []),
            w.get("job") or "Idle",
            w.get("jobs_done", 0),
            w.get("jobs_failed", 0),
            "" if rate is None else f"{rate:,.0f}",
            "" if price is None else f"{price:.2f}",
        ])
    return rows


def workers_note(services: Any) -> str:
    if getattr(services, "fleet", None) is None:
        return "Single-box mode: jobs run in this server. Start it with `--broker` to add GPU workers."
    return "Workers pull jobs from the broker; a worker that stops answering has its job run again elsewhere."
