"""Composition for ``serve --broker``: the broker (or a private local one), the store workers
write to, and the ``FleetJobQueue`` around the local queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sdcloud.catalog import DEMO_MODELS
from sdcloud.errors import BadRequest, NotFound
from sdcloud.fleet import protocol as P
from sdcloud.fleet.assets import FrontAssets
from sdcloud.fleet.broker import LocalRedis, check_url, redact
from sdcloud.fleet.queue import FLEET_KINDS, FleetJobQueue
from sdcloud.jobs.local import LocalJobQueue
from sdcloud.jobs.registry import JobKind
from sdcloud.settings import Settings

log = logging.getLogger(__name__)


def fleet_queue(settings: Settings, local: LocalJobQueue, store: Any, catalog: Any, hashes: Any, *,
                kinds: Mapping[str, JobKind] | None = None,
                on_models: Callable[[], None] | None = None) -> FleetJobQueue:
    """``kinds``: the registry's kinds, for lanes and attempts (sdcloud's own kinds go to the
    workers, ``FLEET_KINDS``; a kind registered only here runs here); ``on_models``: rescan the
    model folders after a worker's merge or training run landed in them."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        raise BadRequest("--broker needs celery and redis: pip install 'sdcloud[scale]'") from None
    broker = settings.broker or ""
    owned: LocalRedis | None = None
    if broker == "local":
        owned = LocalRedis(settings.state_path / "redis")
        url = owned.start()
        print(f"sdcloud: started a private redis-server on 127.0.0.1:{owned.port} (AOF on); workers on this "
              f"machine: sdcloud --data-dir {settings.data_dir} worker --broker local", flush=True)
    else:
        url = check_url(broker)
    if store is None:  # workers on this machine can share a folder; remote ones need --store
        from sdcloud.storage.local import LocalStore

        folder = settings.state_path / "fleet-store"
        folder.mkdir(parents=True, exist_ok=True)
        store = LocalStore(folder)

    def model_sha256(name: str | None) -> str | None:
        """The checkpoint's SHA-256 when this server has the file and has hashed it."""
        if not name or name in DEMO_MODELS:
            return None
        try:
            m = catalog.resolve("checkpoint", name)
        except NotFound:
            return None
        cached = hashes.get(m.path, compute=False) if m.path.is_file() else None
        return cached.sha256 if cached else None

    def model_keys(name: str | None) -> list[str]:
        return P.model_keys(name, model_sha256(name)) if name else []

    def on_live(job: Any, live: dict[str, Any]) -> None:
        """A worker's live report of a job, to the handler of its kind here (``take_live``: a
        training's loss curve and samples, shown by /api/train and the Train tab)."""
        take = getattr(local.handlers.get(job.kind), "take_live", None)
        if take is not None:
            take(job.id, live, store.get)

    assets = FrontAssets(settings, catalog, store, on_models=on_models, hashes=hashes)
    try:
        queue = FleetJobQueue(settings.state_path, url, store, local, worker_timeout=settings.worker_timeout,
                              max_attempts=settings.max_attempts, model_keys=model_keys,
                              model_sha256=model_sha256,
                              on_stop=owned.stop if owned else None,
                              remote_kinds=FLEET_KINDS, kinds=kinds,
                              prepare=assets.prepare, take_models=assets.take_models, on_live=on_live)
    except BaseException:
        if owned is not None:
            owned.stop()
        raise
    log.info("scale-out on %s, images in %s", redact(url), store.url)
    return queue
