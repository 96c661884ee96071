"""``sdcloud worker`` (a GPU box that pulls jobs from a ``serve --broker``) and ``sdcloud
workers`` (who is connected). Needs the ``scale`` extra: ``pip install sdcloud[scale]``."""

from __future__ import annotations

import argparse
import sys

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest
from sdcloud.i18n import _


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="pull generation, checkpoint-tool and training jobs from a 'serve --broker' over Celery "
        "(one per GPU)",
        description="Join a fleet: connect out to the broker, announce this GPU and its models, run one job "
        "at a time (generation, merge and the other checkpoint tools, LoRA training), write images and "
        "models to the store. Nothing listens on this machine.",
    )
    p.add_argument("--broker", required=True, metavar="URL",
                   help="rediss://user:PASSWORD@host:6380/0 (TLS), redis://... on an overlay network, or "
                   "'local' (the broker a 'serve --broker local' with the same --data-dir started)")
    p.add_argument("--store", help="where images go (a folder, s3://bucket/prefix, hf://user/repo); default: "
                   "the store the server announces")
    p.add_argument("--store-endpoint", help="S3-compatible endpoint URL")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="load this model at start and take its jobs first (repeatable; demo for a test)")
    p.add_argument("--name", help="worker name shown in 'sdcloud workers' (default host-pid)")
    p.add_argument("--price-per-hour", type=float, metavar="PRICE", help="what this box costs, for the "
                   "Workers panel")
    p.add_argument("--max-pixels", type=int, help="largest width*height*batch this GPU takes (default from VRAM)")
    p.add_argument("--lane", action="append", choices=("gpu", "train"), metavar="LANE",
                   help="take only this lane's jobs: gpu (generation, checkpoint tools) or train (LoRA "
                   "training); repeatable; default both")
    p.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_worker)

    w = sub.add_parser("workers", help="list the workers connected to a broker",
                       description="Workers connected to the broker: GPU, models held, current job, rates.")
    w.add_argument("--broker", required=True, metavar="URL", help="the broker URL, or 'local'")
    w.add_argument("--json", action="store_true", help="print JSON ({\"workers\": [...]})")
    w.set_defaults(func=cmd_workers)


def _broker_url(args: argparse.Namespace, settings: object) -> str:
    from sdcloud.fleet.broker import check_url, local_url

    if args.broker == "local":
        return local_url(settings.state_path)  # type: ignore[attr-defined]
    return check_url(args.broker)


def _need_scale() -> None:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        raise BadRequest("scale-out needs celery and redis: pip install 'sdcloud[scale]'") from None


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    _need_scale()
    settings = load_settings(args, store=args.store, store_endpoint=args.store_endpoint, device=args.device)
    url = _broker_url(args, settings)
    from sdcloud.fleet import protocol as P
    from sdcloud.fleet.broker import connect, redact
    from sdcloud.storage.stores import open_store

    client = connect(url)
    store_url = settings.store
    if not store_url:
        raw = client.hget(P.CONFIG_KEY, "store")
        store_url = raw.decode() if raw else None
    if not store_url:
        raise BadRequest("this worker needs a store for its images: pass --store (a folder, s3://... or "
                         "hf://...), or start the server with --store")
    store = open_store(store_url, settings.store_endpoint)
    store.check()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    from sdcloud.fleet.worker import WorkerRuntime, run_worker

    runtime = WorkerRuntime(settings, url, store, name=args.name, models=args.model,
                            price_per_hour=args.price_per_hour, max_pixels=args.max_pixels, lanes=args.lane)
    print(_("sdcloud: worker {name} ({gpu}) joined {broker}; images go to {store}; holds {models}").format(
        name=runtime.name, gpu=runtime.gpu_name, broker=redact(url), store=store.url,
        models=", ".join(runtime.held_models()) or _("no model yet")), flush=True)
    run_worker(runtime, loglevel=args.log_level.upper())
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    import json
    import time

    _need_scale()
    settings = load_settings(args)
    url = _broker_url(args, settings)
    from sdcloud.fleet import protocol as P
    from sdcloud.fleet.broker import connect

    client = connect(url)
    workers = []
    for key in client.scan_iter(match=P.WORKER_PREFIX + "*", count=200):
        raw = client.get(key)
        if raw:
            workers.append(json.loads(raw))
    workers.sort(key=lambda w: w["name"])
    if args.json:
        print(json.dumps({"workers": workers}, indent=2))
        return 0
    if not workers:
        print(_("no workers connected"))
        return 0
    now = time.time()
    for w in workers:
        hours = max(1e-9, (now - w["started"]) / 3600)
        rate = f"{w['images_done'] / hours:,.0f} img/h" if hours > 1 / 360 else "-"
        price = f"{w['price_per_hour']:.2f}/h" if w.get("price_per_hour") is not None else "-"
        vram = f"{w['vram_gb']} GB" if w.get("vram_gb") else ""
        job = w.get("job") or _("idle")
        print(f"{w['name']:<20} {w['gpu']} {vram:<7} {job:<32} " + _("done {n}").format(n=f"{w['jobs_done']:>5}")
              + f"  {rate:>10}  {price}")
        print(f"{'':<20} " + _("holds {models}").format(models=", ".join(w.get("models") or []) or "-"))
    sys.stdout.flush()
    return 0
