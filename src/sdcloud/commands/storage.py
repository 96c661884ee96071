"""``sdcloud storage status|drain|push|pull`` and ``sdcloud models pull|push``.

No torch here: these commands start instantly on a fresh machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest, SdcloudError
from sdcloud.i18n import _


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="folder, hf://<user>/<repo>, hf://datasets/<user>/<repo> or "
                   "s3://<bucket>/<prefix>; env SDCLOUD_STORE")
    p.add_argument("--store-endpoint", help="S3-compatible endpoint URL (R2, B2, Wasabi, MinIO); "
                   "env SDCLOUD_STORE_ENDPOINT")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("storage", help="persistent store: status, upload queue, session push/pull")
    ssub = p.add_subparsers(dest="storage_command", metavar="ACTION")
    st = ssub.add_parser("status", help="check the store and show the upload queue")
    _store_args(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)
    dr = ssub.add_parser("drain", help="upload everything still queued, now, in the foreground")
    _store_args(dr)
    dr.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    dr.set_defaults(func=cmd_drain)
    pu = ssub.add_parser("push", help="save settings, presets, LoRAs, embeddings, VAEs and the "
                         "checkpoint list to the store")
    _store_args(pu)
    pu.add_argument("--checkpoints", action="store_true", help="also upload the checkpoint files")
    pu.set_defaults(func=cmd_push)
    pl = ssub.add_parser("pull", help="restore a session from the store onto this machine")
    _store_args(pl)
    pl.add_argument("--checkpoints", choices=("auto", "store", "source", "none"), default="auto",
                    help="where checkpoints come from: the store, their source URL, either "
                    "(auto, the default) or not at all")
    pl.add_argument("--force", action="store_true", help="overwrite local files with the store's")
    pl.set_defaults(func=cmd_pull)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def add_model_commands(msub: argparse._SubParsersAction) -> None:
    """``models pull`` / ``models push`` (registered by ``sdcloud.commands.models``)."""
    pl = msub.add_parser("pull", help="download a model into the right folder (resumable, verified)")
    pl.add_argument("source", help="URL, hf://user/repo[/file], user/repo[/file], a Civitai URL or "
                    "civitai:<version-id>")
    pl.add_argument("--kind", choices=("checkpoint", "lora", "vae", "embedding"),
                    help="which folder (default: from Civitai's model type or the file's tensors)")
    pl.set_defaults(func=cmd_models_pull)
    pu = msub.add_parser("push", help="upload a model to the Hugging Face Hub (files >5 GB resumable)")
    pu.add_argument("file", help="model file (a path, or a name in the checkpoints folder)")
    pu.add_argument("target", help="hf://<user>/<repo>[/path] (created private if missing)")
    pu.set_defaults(func=cmd_models_push)


def _settings(args: argparse.Namespace) -> Any:
    return load_settings(args, store=getattr(args, "store", None),
                         store_endpoint=getattr(args, "store_endpoint", None))


def _need_store(settings: Any) -> Any:
    from sdcloud.storage.health import open_checked_store

    store = open_checked_store(settings)
    if store is None:
        raise BadRequest("no store set; pass --store or set SDCLOUD_STORE (a folder, hf://<user>/<repo> "
                         "or s3://<bucket>/<prefix>)")
    return store


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from sdcloud.storage.health import persistence_warnings
    from sdcloud.storage.outbox import Outbox
    from sdcloud.storage.stores import open_store

    settings = _settings(args)
    store = open_store(settings.store, endpoint=settings.store_endpoint) if settings.store else None
    problem = None
    if store is not None:
        try:
            store.check()
        except SdcloudError as exc:
            problem = str(exc)
    box = Outbox(settings, store)
    status = box.status()
    box.close()
    status["healthy"] = None if store is None else problem is None
    status["problem"] = problem
    status["warnings"] = persistence_warnings(settings)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"store:     {status['store'] or '(none: images stay on this machine only)'}")
        if store is not None:
            print(f"reachable: {'yes' if problem is None else 'NO - ' + problem}")
        print(f"pending:   {status['pending']}")
        print(f"uploaded:  {status['uploaded']}")
        if status["missing"]:
            print(f"missing:   {status['missing']} (deleted locally before upload)")
        if status["last_error"]:
            print(f"last error: {status['last_error']}")
        for w in status["warnings"]:
            _err(f"warning: {w}")
    return 1 if problem else 0


def cmd_drain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sdcloud.storage.outbox import Outbox

    settings = _settings(args)
    box = Outbox(settings, _need_store(settings), backoff=(1.0, 15.0))
    total = box.pending_count()
    if not total:
        print(_("nothing to upload"))
        box.close()
        return 0
    with tqdm(total=total, unit="file", file=sys.stderr, desc=_("uploading")) as bar:
        box.on_change = lambda st: bar.update(total - st["pending"] - bar.n)
        box.start()
        done = box.wait_idle(args.timeout)
        status = box.status()
        box.close()
    if not done:
        raise SdcloudError(f"{status['pending']} file(s) still pending after {args.timeout:.0f}s "
                           f"({status['last_error']}); run 'sdcloud storage drain' again")
    print(f"uploaded {total} file(s) to {status['store']}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from sdcloud.storage.sync import push_session

    settings = _settings(args)
    result = push_session(settings, _need_store(settings), checkpoints=args.checkpoints, report=_err)
    print(f"session saved: {result['uploaded']} uploaded, {result['skipped']} unchanged, "
          f"{result['checkpoints_listed']} checkpoint(s) listed")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from sdcloud.storage.sync import pull_session

    settings = _settings(args)
    settings.ensure_dirs()
    result = pull_session(settings, _need_store(settings), checkpoints=args.checkpoints,
                          force=args.force, report=_err)
    print(f"session restored: {result['restored']} file(s), {result['skipped']} kept local, "
          f"{result['checkpoints_fetched']} checkpoint(s) fetched")
    if result["checkpoints_missing"]:
        _err("warning: not fetched: " + ", ".join(result["checkpoints_missing"]) +
             " (no copy in the store and no known source; push with --checkpoints)")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from sdcloud.storage.model_pull import pull

    settings = load_settings(args)
    settings.ensure_dirs()
    dest = pull(args.source, settings, kind=args.kind, progress=sys.stderr.isatty())
    print(f"saved {dest}")
    return 0


def cmd_models_push(args: argparse.Namespace) -> int:
    from sdcloud.storage.model_push import push_model

    settings = load_settings(args)
    file = Path(args.file)
    if not file.exists() and (settings.checkpoints_path / args.file).exists():
        file = settings.checkpoints_path / args.file
    where = push_model(file, args.target, staging_root=settings.state_path / "push")
    print(f"uploaded {where}")
    return 0
