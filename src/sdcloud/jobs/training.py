"""LoRA training as a queued job (kind ``train-lora``, lane ``train``): it holds the GPU owner as
``BACKGROUND`` and yields between steps, so a txt2img submitted meanwhile runs between two
training steps instead of waiting hours.

The live loss curve and sample images of each job are kept in ``TrainRunner.live`` (and the
losses in ``<job out>/losses.json`` once it ends); for a job that runs on a fleet worker, the
front's runner fills it from the worker's reports (``take_live``). Cancel, and the cost meter's graceful stop
(``stop_all``), save the resumable state first. A job cut off by a crash is retried by the
queue and then resumes from its saved state instead of starting over.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sdcloud.errors import Cancelled
from sdcloud.jobs.base import JobContext
from sdcloud.jobs.control import ProgressEvent
from sdcloud.settings import Settings

KIND = "train-lora"
LANE = "train"
MAX_ATTEMPTS = 5  # resumable: a crash costs at most --save-state-every steps
MAX_POINTS = 2000


class _JobStop:
    """Looks like an Event to the trainer: set by a cancel or by the graceful stop."""

    def __init__(self, ctx: JobContext, stop_all: threading.Event) -> None:
        self.ctx, self.stop_all = ctx, stop_all

    def is_set(self) -> bool:
        return self.ctx.cancel.interrupted or self.stop_all.is_set()


class TrainRunner:
    def __init__(self, settings: Settings, *, store: Any = None, gpu: Any = None,
                 on_output: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.gpu = gpu  # jobs.gpu.GpuOwner (None: run without one, as in tests of the runner alone)
        self.on_output = on_output or (lambda: None)
        self.stop_all = threading.Event()
        self.live: dict[str, dict[str, Any]] = {}

    def take_live(self, job_id: str, report: Mapping[str, Any], fetch: Callable[[str, Path], None]) -> None:
        """A fleet worker's live report of a job: its new loss points and samples (``fetch(key,
        dest)`` copies a sample from the store into ``outputs/train-samples/<name>/``). A later
        attempt that resumed from an earlier step replaces the points from that step on, so the
        curve of a resumed job keeps what came before."""
        live = self.live.setdefault(job_id, {"losses": [], "samples": [], "phase": "queued",
                                             "name": str(report.get("name") or "")})
        for key in ("phase", "it_s", "eta_s"):
            if key in report:
                live[key] = report[key]
        points = [[int(s), float(v)] for s, v in report.get("losses") or []]
        if points:
            first = points[0][0]
            if live["losses"] and first <= live["losses"][-1][0]:  # resumed from an earlier step
                live["losses"] = [p for p in live["losses"] if p[0] < first]
                live["samples"] = [s for s in live["samples"] if s["step"] < first]
            live["losses"].extend(points)
            del live["losses"][:-MAX_POINTS]
        folder = Path(str(live.get("name") or job_id)).name or job_id
        for sample in report.get("samples") or []:
            name = Path(str(sample.get("name", ""))).name
            if not name or name.startswith("."):
                continue
            dest = self.settings.outputs_path / "train-samples" / folder / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            fetch(str(sample["key"]), dest)
            step = int(sample.get("step", 0))
            live["samples"] = [s for s in live["samples"] if s["step"] != step] + [{"step": step, "path": str(dest)}]

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        from sdcloud.training.config import config_from_mapping
        from sdcloud.training.state import has_state
        from sdcloud.training.trainer import Trainer, TrainingStopped, state_root

        payload = dict(ctx.payload)
        resume = bool(payload.pop("resume", False))
        restart = bool(payload.pop("restart", False))
        for key in ("dataset_key", "reg_dir_key"):  # where a fleet worker fetched the dataset from
            payload.pop(key, None)
        cfg = config_from_mapping(payload)
        # a retried job (the box died mid-run, here or on another fleet worker) continues from
        # its saved state, found locally or on the store
        if not resume and ctx.attempt > 1 and has_state(state_root(self.settings), cfg.name, self.store):
            resume = True
        live = self.live.setdefault(ctx.job.id, {"losses": [], "samples": [], "phase": "queued", "name": cfg.name})

        def progress(p: Any) -> None:
            live["phase"] = p.phase
            live["eta_s"] = p.eta_s
            live["it_s"] = p.it_s
            if p.phase == "training" and p.loss is not None:
                live["losses"].append([p.step, round(p.loss, 6)])
                del live["losses"][:-MAX_POINTS]
            if p.sample:
                live["samples"].append({"step": p.step, "path": p.sample})
            metrics = {"loss": p.loss, "avg_loss": p.avg_loss, "it_s": p.it_s} if p.loss is not None else {}
            ctx.report(ProgressEvent(p.step, p.total, metrics={k: v for k, v in metrics.items() if v is not None}))
            if p.phase == "training" and self.gpu is not None:
                self.gpu.yield_point()  # a generation waiting now runs between two training steps

        trainer = Trainer(cfg, self.settings, store=self.store, progress=progress, restart=restart and not resume,
                          stop=_JobStop(ctx, self.stop_all))  # type: ignore[arg-type]
        try:
            if self.gpu is not None:
                from sdcloud.jobs.gpu import BACKGROUND

                with self.gpu.hold(BACKGROUND):
                    result = trainer.run(resume=resume)
            else:
                result = trainer.run(resume=resume)
        except TrainingStopped as exc:
            raise Cancelled(str(exc)) from None
        finally:
            (Path(ctx.output_dir) / "losses.json").write_text(json.dumps(live["losses"]), encoding="utf-8")
        self.on_output()
        return {"lora": result.lora_path.name if result.lora_path else None, "name": cfg.name,
                "steps": result.steps, "resumed_from": result.resumed_from,
                "final_loss": result.losses[-1] if result.losses else None,
                "seconds": round(result.seconds, 1), "samples": len(result.samples)}
