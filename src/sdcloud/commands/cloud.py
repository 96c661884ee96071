"""``sdcloud plan``, ``sdcloud doctor`` and ``sdcloud platform``: cloud costs and health.

All three answer in well under a second: no torch, no network.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest
from sdcloud.i18n import _

if TYPE_CHECKING:
    from sdcloud.cloud.planner import Plan

USER_CATALOG = "catalog.json"  # in the data dir: a user's own prices, merged over the packaged ones


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="rank providers/plans/GPUs by what a month of your work costs")
    p.add_argument("--images", type=int, default=0, help="images a month")
    p.add_argument("--model", default="sd15", help="model family: sd15 or sdxl")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default 20 for sd15, 30 for sdxl)"
    )
    p.add_argument("--size", default=None, help="WxH (default 512x512 for sd15, 1024x1024 for sdxl)")
    p.add_argument("--train-hours", type=float, default=0.0, help="GPU-hours of training a month")
    p.add_argument("--train-steps", type=int, default=0,
                   help="LoRA training: steps per run (estimated per GPU, added to the GPU-hours)")
    p.add_argument("--train-runs", type=int, default=1, help="LoRA trainings a month (default 1)")
    p.add_argument("--train-batch", type=int, default=2, help="training batch size (default 2)")
    p.add_argument("--train-size", type=int, default=0, help="training resolution (default 512 / 1024 for sdxl)")
    p.add_argument("--train-dataset", type=Path, default=None,
                   help="dataset folder: report its images and epochs for --train-steps")
    p.add_argument("--storage-gb", type=float, default=0.0, help="persistent storage you need")
    p.add_argument("--currency", default="USD", help="USD or JPY (or any rate in your catalog file)")
    p.add_argument("--jpy-per-usd", type=float, default=None, help="conversion rate (default: the catalog's)")
    p.add_argument("--budget", type=float, default=None, help="also say how many images this buys")
    p.add_argument("--provider", action="append", help="only this provider (repeatable)")
    p.add_argument("--gpu", action="append", help="only this GPU (repeatable)")
    p.add_argument(
        "--catalog",
        action="append",
        type=Path,
        help=f"a JSON file overriding/extending prices (repeatable; <data-dir>/{USER_CATALOG} "
        "and env SDCLOUD_CATALOG are read too)",
    )
    p.add_argument("--store", help="price storage on this store for every row: gdrive, hf, s3, r2 (or any "
                   "storage id in the catalog); default: each offer's own disk or plan storage")
    p.add_argument("--explain", metavar="OFFER", help="show how the rows of one offer (an id such as "
                   "aws-spot, shown after each offer's notes) were computed, figure by figure")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    d = sub.add_parser("doctor", help="check GPU, versions, RAM, disks, store and platform terms")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--train-config", type=Path, help="also check that this LoRA training config fits the GPU")
    d.add_argument("--train-preset", help="also check this memory preset (see 'sdcloud train presets')")
    d.add_argument("--train-family", choices=["sd15", "sdxl"], help="model family of the training "
                   "(default: the preset's, else guessed from the config's model name)")
    d.set_defaults(func=cmd_doctor)

    pl = sub.add_parser("platform", help="show the detected platform, its storage, limits and public URL")
    pl.add_argument("--port", type=int, default=None, help="port serve will use (default: settings)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=cmd_platform)


# plan ----------------------------------------------------------------------------------------
def catalog_files(args: argparse.Namespace, data_dir: Path) -> list[Path]:
    files: list[Path] = []
    user = data_dir / USER_CATALOG
    if user.is_file():
        files.append(user)
    if os.environ.get("SDCLOUD_CATALOG"):
        files.append(Path(os.environ["SDCLOUD_CATALOG"]))
    files += list(getattr(args, "catalog", None) or [])
    return files


def cmd_plan(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from sdcloud.cloud.planner import Planner, Workload, parse_size
    from sdcloud.cloud.price_catalog import load_price_catalog
    from sdcloud.cloud.throughput import MEASUREMENTS_FILE, ThroughputTable

    settings = load_settings(args)
    rates = None
    if args.jpy_per_usd is not None:
        if not (math.isfinite(args.jpy_per_usd) and args.jpy_per_usd > 0):
            raise BadRequest(f"--jpy-per-usd must be a positive number, got {args.jpy_per_usd:g}")
        rates = {"JPY": args.jpy_per_usd}
    catalog = load_price_catalog(catalog_files(args, settings.data_dir), rates=rates)
    table = ThroughputTable(catalog.throughput, settings.state_path / MEASUREMENTS_FILE)
    family = table.check_family(args.model.lower())
    sdxl = family == "sdxl"
    width, height = parse_size(args.size or ("1024x1024" if sdxl else "512x512"))
    steps = args.steps if args.steps is not None else (30 if sdxl else 20)
    work = Workload(
        images=args.images,
        family=family,
        steps=steps,
        width=width,
        height=height,
        train_hours=args.train_hours,
        storage_gb=args.storage_gb,
        train_steps=args.train_steps,
        train_runs=args.train_runs,
        train_batch=args.train_batch,
        train_size=args.train_size,
    )
    dataset_note = _dataset_note(args, work) if args.train_dataset else None
    plan = Planner(catalog, table).plan(
        work, currency=args.currency, budget=args.budget, providers=args.provider, gpus=args.gpu,
        store=args.store,
    )
    elapsed = time.perf_counter() - started
    if dataset_note:
        plan.notes.insert(0, dataset_note)
    if args.explain:
        from sdcloud.cloud.planner import explain

        lines = explain(plan, catalog, args.explain)
        if args.json:
            print(json.dumps({"offer": args.explain, "explain": lines}, indent=2, ensure_ascii=False))
        else:
            print("\n".join(lines))
        return 0
    if args.json:
        out = plan.to_dict()
        out["elapsed_s"] = round(elapsed, 3)
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0
    _print_plan(plan, elapsed)
    return 0


def _dataset_note(args: argparse.Namespace, work: object) -> str:
    """Images, samples per epoch and epochs of the planned training (PIL only, no torch)."""
    from sdcloud.training.config import TrainConfig
    from sdcloud.training.dataset import scan_dataset

    cfg = TrainConfig(dataset=str(args.train_dataset), resolution=getattr(work, "train_side", 512))
    report = scan_dataset(cfg)
    per_epoch = sum(i.repeats for i in report.train_images)
    if not per_epoch:
        raise BadRequest(f"--train-dataset {args.train_dataset}: " + (report.errors or ["no images"])[0])
    epochs = args.train_steps * args.train_batch / per_epoch if args.train_steps else 0
    return (f"Training dataset: {len(report.train_images)} images ({per_epoch} samples per epoch with repeats); "
            f"{args.train_steps} steps x batch {args.train_batch} = {epochs:.1f} epochs"
            + (f"; {len(report.errors)} problem(s): run 'sdcloud train check'" if report.errors else ""))


def _money(value: float | None, currency: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return (
        f"¥{value:,.0f}"
        if currency == "JPY"
        else f"{value:,.2f} {currency}"
        if currency != "USD"
        else f"${value:,.2f}"
    )


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (CJK characters take two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A plain text table (rich would add a fifth of a second to the start-up)."""
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(_pad(c, w, right=i >= 3) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _print_plan(plan: Plan, elapsed: float) -> None:
    w = plan.workload
    cur = plan.currency
    trainings = (_(" + {runs} LoRA training(s) of {steps} steps").format(runs=w.train_runs, steps=w.train_steps)
                 if w.train_steps else "")
    print(_("{images} {family} images/month ({width}x{height}, {steps} steps) + {train} h training{trainings}, "
            "{storage} GB storage: cost per month in {currency}").format(
        images=f"{w.images:,}", family=w.family, width=w.width, height=w.height, steps=w.steps,
        train=f"{w.train_hours:g}", trainings=trainings, storage=f"{w.storage_gb:g}", currency=cur) + "\n")
    header = ["#", _("provider / plan"), "GPU", _("price/h"), _("GPU-h"), _("fee"), _("compute"), _("storage"),
              _("total")]
    if plan.budget is not None:
        header.append(_("images for {budget}").format(budget=_money(plan.budget, cur)))
    rows = []
    for i, r in enumerate(plan.rows, 1):
        cells = [
            str(i) if r.fits else f"{i}x",
            f"{r.provider} {r.plan}",
            f"{r.gpu} {r.vram_gb:g}G" if r.vram_gb else r.gpu,
            _money(r.price_per_hour, cur),
            "-" if r.gpu_hours is None else f"{r.gpu_hours:,.1f}",
            _money(r.fee, cur),
            _money(r.compute_cost, cur),
            _money(r.storage_cost, cur),
            _money(r.total, cur) + (" + disk" if r.storage_cost is None and r.fits else ""),
        ]
        if plan.budget is not None:
            cells.append("-" if r.images_for_budget is None else f"{r.images_for_budget:,}")
        rows.append(cells)
    print(_table(header, rows))
    print("\n" + _("x = does not fit this plan, or its terms forbid it (see its notes)."))
    numbers: dict[str, list[int]] = {}
    for i, r in enumerate(plan.rows, 1):
        numbers.setdefault(r.offer, []).append(i)
    for nums in numbers.values():
        offer_rows = [plan.rows[i - 1] for i in nums]
        r = offer_rows[0]
        print(f"[{', '.join(map(str, nums))}] {r.provider} {r.plan} ({r.offer}): " + "; ".join(r.notes))
        cited = dict.fromkeys(f"{x.source or '?'} ({x.date or 'undated'})" for x in offer_rows)
        print("    " + _("sources: {list}").format(list="; ".join(cited)))
    for note in plan.notes:
        print(f"* {note}")
    print(_("planned in {seconds} s").format(seconds=f"{elapsed:.3f}"))
    if plan.rows:
        print(_("how a row was computed: sdcloud plan ... --explain {offer}").format(offer=plan.rows[0].offer))


# doctor --------------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from sdcloud.cloud.doctor import run_doctor

    started = time.perf_counter()
    report = run_doctor(load_settings(args), train=_train_check(args))
    elapsed = time.perf_counter() - started
    if args.json:
        out = report.to_dict()
        out["elapsed_s"] = round(elapsed, 3)
        print(json.dumps(out, indent=2))
        return 0
    marks = {"ok": "ok  ", "info": "info", "warn": "WARN", "error": "FAIL"}
    for f in report.findings:
        print(f"[{marks[f.level]}] {f.topic}: {f.detail}")
        if f.fix and f.level in ("warn", "error"):
            print(f"       -> {f.fix}")
    print(_("doctor finished in {seconds} s (worst finding: {worst})").format(seconds=f"{elapsed:.3f}",
                                                                              worst=report.worst))
    return 1 if report.worst == "error" else 0


def _train_check(args: argparse.Namespace) -> tuple[object, str] | None:
    if not (getattr(args, "train_config", None) or getattr(args, "train_preset", None)):
        return None
    from sdcloud.training.config import TrainConfig, config_from_mapping, load_toml
    from sdcloud.training.presets import PRESETS, apply_preset

    toml = load_toml(args.train_config) if args.train_config else {}
    preset = args.train_preset or toml.pop("memory_preset", None)
    cfg = apply_preset(TrainConfig(), preset) if preset else TrainConfig()
    cfg = config_from_mapping(toml, cfg)
    family = args.train_family or (PRESETS[preset].family if preset else None)
    if family is None:
        family = "sdxl" if "xl" in cfg.model.lower() else "sd1"
    return cfg, {"sd15": "sd1"}.get(family, family)


# platform ------------------------------------------------------------------------------------
def cmd_platform(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sdcloud.cloud.platforms import detect
    from sdcloud.cloud.public_url import choose_method, required_port

    settings = load_settings(args)
    detected = detect()
    port = required_port(detected, args.port or settings.port)
    url = choose_method(detected, port, os.environ)
    info = {
        "platform": asdict(detected.profile),
        "evidence": list(detected.evidence),
        "persistent_present": list(detected.persistent_present),
        "public_url": {"method": url.method, "url": url.url, "port": url.port, "notes": url.notes},
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    prof = detected.profile
    print(f"platform: {prof.name} ({', '.join(detected.evidence)})")
    print(
        f"persistent: {', '.join(prof.persistent) or '(this disk; depends on the VM)'}"
        f"  present: {', '.join(detected.persistent_present) or 'none'}"
    )
    print(f"ephemeral: {', '.join(prof.ephemeral)}")
    limit = f"{prof.session_limit_hours:g} h" if prof.session_limit_hours else "none known"
    print(f"session limit: {limit}")
    for line in prof.limits:
        print(f"  - {line}")
    print(f"public URL: {url.method}" + (f" {url.url}" if url.url else "") + f" (port {url.port})")
    for n in url.notes:
        print(f"  - {n}")
    for t in prof.terms:
        print(f"terms: {t}")
    return 0
