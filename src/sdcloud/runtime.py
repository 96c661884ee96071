"""The composition root: everything a process needs to run jobs, built once from ``Settings``.

``sdcloud serve`` (through ``api.services.Services``), the Gradio UI (the same ``Services``),
``sdcloud generate`` and a future ``sdcloud worker`` all build one ``Runtime``; nothing else
wires the catalog, engine, GPU owner, job kinds, queue, outbox and session guard together.
It imports no HTTP package and no torch at load (the engine is built on first use).

Order matters and is kept here: the store is checked first (a bad ``--store`` is a one-line
error before anything else starts), the session is restored from it before the catalog
reads the model folders, and the job handlers are built from the registry last, so a
handler factory can use every other part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.catalog import Catalog
from sdcloud.errors import NotFound
from sdcloud.jobs import Job, JobKinds, JobQueue, LocalJobQueue
from sdcloud.jobs.base import job_file_name, outputs_file
from sdcloud.jobs.generation import EngineHost, GenerationObserver, image_keys
from sdcloud.jobs.gpu import GpuOwner
from sdcloud.jobs.registry import builtin_kinds
from sdcloud.settings import Settings
from sdcloud.startup import StartupTimeline
from sdcloud.storage.persistence import Persistence


class Runtime:
    """``engine``/``queue``/``kinds`` replace the defaults (tests, a worker with its own queue
    backend; ``queue`` may be a callable that gets this runtime, handlers built, and returns
    the queue); ``restore_session=False`` skips pulling the session from the store (a one-shot
    command that only adds images); ``queue_dir`` puts the local queue's journal elsewhere than
    the state folder (``sdcloud generate`` keeps its one job apart from a server's queue);
    ``clock`` (monotonic seconds) drives the session guard's cost meter (tests)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Any = None,
        queue: JobQueue | Callable[[Runtime], JobQueue] | None = None,
        kinds: JobKinds | None = None,
        restore_session: bool = True,
        queue_dir: Path | None = None,
        clock: Callable[[], float] | None = None,
        startup: StartupTimeline | None = None,
    ) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.startup = startup or StartupTimeline()  # serve prints it; /api/session reports it
        with self.startup.phase("store_restore") as phase:
            self.persistence = Persistence(settings)  # checks the store now: a bad one is a one-line error
            if restore_session:
                self.persistence.pull_session()  # before the catalog reads the restored files
            phase["detail"] = self.persistence.restore_summary()
        self.catalog = Catalog(settings)
        if engine is None:
            from sdcloud.engine.engine import Engine

            engine = Engine(settings)
        self.gpu = GpuOwner()
        self.host = EngineHost(engine, self.gpu)
        self.hashes = engine.hashes  # one cache, so hashes the engine computes show up everywhere
        from sdcloud.cloud.speed_recorder import SpeedRecorder

        self.generation_observers: list[GenerationObserver] = [SpeedRecorder(settings)]
        self.kinds = kinds or builtin_kinds()
        self.handlers = self.kinds.build(self)  # kind -> handler, what any queue backend runs
        self.queue_dir = queue_dir or settings.state_path
        if queue is None:
            self.queue: JobQueue = LocalJobQueue(self.queue_dir, self.handlers, kinds={k.name: k for k in self.kinds},
                                                 data_dir=settings.data_dir)
            if settings.broker:  # scale-out: every kind goes to workers (generation, tools, training)
                from sdcloud.fleet.setup import fleet_queue

                self.queue = fleet_queue(settings, self.queue, self.persistence.store, self.catalog, self.hashes,
                                         kinds={k.name: k for k in self.kinds}, on_models=self.refresh)
        else:
            self.queue = queue if isinstance(queue, JobQueue) else queue(self)
        from sdcloud.cloud.session_control import SessionControl

        self.session = SessionControl(settings, self.queue, self.persistence, clock,  # cost meter, limits
                                      startup=self.startup)

    # lifecycle ---------------------------------------------------------------------------
    def start(self, *, watch_session: bool = True, fetch_checkpoints: bool = True) -> None:
        """Start the outbox uploader, the queue's workers and (for a server) the session guard."""
        self.persistence.start(on_checkpoints=self.refresh if fetch_checkpoints else None)
        self.queue.start()
        if watch_session:
            self.session.start()

    def stop(self) -> None:
        """Finish the running jobs, then try to get every saved image into the store."""
        self.session.stop()
        self.queue.stop()
        self.persistence.stop()

    def on_saved(self, paths: list[Path]) -> None:
        """Every saved image: into the outbox (and the session's first image, if it is one)."""
        self.persistence.add(paths)
        if paths:
            self.on_image(Path(paths[0]).name)

    def on_image(self, detail: str = "") -> None:
        """An image was made, saved or not (A1111's API default is ``save_images=false``): the
        session's first one closes the start-up timeline and, with ``compile``, saves
        torch.compile's cache for the next machine."""
        if not self.startup.mark_first_image(detail):
            return
        first = self.startup.to_dict()["first_image_s"]
        print(f"sdcloud: first image ready {first:.1f} s after start", file=sys.stderr, flush=True)
        if self.settings.compile and self.host.engine.current is not None:
            from sdcloud.engine.compile_cache import save_artifacts

            saved = save_artifacts(self.settings.state_path)
            if saved is not None:
                self.persistence.save_to_session(saved, "compile-cache")

    def refresh(self) -> None:
        """Rescan the model folders (after a new checkpoint arrived)."""
        self.catalog.refresh()
        self.host.engine.catalog.refresh()

    # results -----------------------------------------------------------------------------
    def result_file(self, job: Job, key: str) -> Path:
        """The local file of a job's result key (``NotFound`` if it is gone or not allowed)."""
        name = job_file_name(key)
        if name is not None:
            return self.queue.output_file(job.id, name)
        path = Path(key)
        if path.is_absolute():  # a result journaled by an earlier version: absolute paths
            path = path.resolve()
            roots = (self.settings.outputs_path.resolve(), (self.queue_dir / "jobs" / job.id).resolve())
            if not any(path.is_relative_to(root) for root in roots):
                raise NotFound(f"an image of job '{job.id}' is no longer available")
        else:
            path = outputs_file(self.settings.outputs_path, key)
        if not path.is_file():
            raise NotFound(f"an image of job '{job.id}' is no longer on disk")
        return path

    def image_files(self, job: Job) -> list[Path]:
        """The image files of a finished generation job, grid first when there is one."""
        return [self.result_file(job, key) for key in image_keys(job.result)]
