"""What passes between a running job and whoever watches it: the cancel token the handler
checks between steps, the step report the engine makes, and the serialisable progress event
the queue keeps on the job (what the API, the UI and a remote worker's backend pass on).

No torch, no PIL at import: the engine, the job runners and the API all import this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREVIEW_MAX_SIDE = 256  # a progress event's preview is at most this many pixels on its long side


class CancelToken:
    """Cooperative control of one running job, checked by its handler between steps.

    ``interrupt()`` stops the whole job (A1111's Interrupt: finished images are kept and the
    job counts as done); ``skip()`` abandons the current batch and goes on with the next;
    ``cancel()`` is an interrupt after which the job counts as cancelled (the queue's
    ``cancel(job_id)``). Handlers only need to look at ``interrupted`` and ``take_skip()``.
    """

    def __init__(self) -> None:
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self._cancel = threading.Event()

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._interrupt.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def take_skip(self) -> bool:
        """True once per ``skip()`` call."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False


@dataclass(frozen=True)
class Progress:
    """The engine's report after each sampling step. ``step`` of ``steps`` counts over the whole
    job (all batches and the hires pass); ``job`` is the batch (0-based) of ``job_count``."""

    step: int
    steps: int
    job: int
    job_count: int
    preview: Any = None  # a small PIL image when asked for, else None

    @property
    def fraction(self) -> float:
        if self.steps <= 0:
            return 0.0
        return min(1.0, self.step / self.steps)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update of a job, JSON-able as is (``to_dict`` / ``from_dict``).

    ``step`` of ``total`` is the fraction done (steps, bytes, epochs: whatever the job counts);
    ``job_no`` of ``job_count`` is the batch for generation jobs; ``preview`` is a small image
    as raw base64 PNG (at most ``PREVIEW_MAX_SIDE`` pixels a side; a JPEG when the front took it
    from a fleet worker) or None; ``metrics`` holds
    free-form numbers a job wants shown (``{"loss": 0.081, "lr": 1e-4}`` for training).
    """

    step: int = 0
    total: int = 0
    job_no: int = 0
    job_count: int = 0
    preview: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "total": self.total, "job_no": self.job_no, "job_count": self.job_count,
                "preview": self.preview, "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProgressEvent:
        return cls(step=int(data.get("step", 0)), total=int(data.get("total", 0)),
                   job_no=int(data.get("job_no", 0)), job_count=int(data.get("job_count", 0)),
                   preview=data.get("preview"), metrics=dict(data.get("metrics") or {}))

    @classmethod
    def from_progress(cls, p: Progress, metrics: Mapping[str, float] | None = None) -> ProgressEvent:
        """The event for an engine step report; its PIL preview is shrunk and encoded here."""
        return cls(step=p.step, total=p.steps, job_no=p.job, job_count=p.job_count,
                   preview=encode_preview(p.preview) if p.preview is not None else None,
                   metrics=dict(metrics or {}))


def encode_preview(image: Any) -> str:
    """A PIL image as raw base64 PNG, shrunk to ``PREVIEW_MAX_SIDE`` pixels on its long side."""
    from sdcloud.image_files import encode_image

    if max(image.size) > PREVIEW_MAX_SIDE:
        image = image.copy()
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    return encode_image(image)
