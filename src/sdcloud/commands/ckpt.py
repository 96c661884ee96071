"""``sdcloud ckpt``: inspect, hash, convert, prune, merge and LoRA-bake checkpoints in little RAM.

Thin: parse, call ``sdcloud.checkpoints.*``, show progress, print. Inputs are paths or
names found in the model folders; outputs default to the checkpoint folder.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest, NotFound

METHODS = ("weighted_sum", "add_difference", "train_difference", "ties", "dare")
DTYPES = ("fp16", "bf16", "fp32", "keep")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ckpt", help="inspect, hash, convert, prune, merge, bake LoRAs (low RAM)")
    csub = p.add_subparsers(dest="ckpt_command", metavar="ACTION")

    s = csub.add_parser("inspect", help="architecture, dtypes, parameters, components, metadata")
    s.add_argument("model", help="checkpoint path or name in models/Stable-diffusion")
    s.add_argument("--hash", action="store_true", help="also compute the hashes (reads the whole file)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_inspect)

    s = csub.add_parser("hash", help="A1111 short hash, AutoV1, AutoV2 and LoRA/addnet hash in one read")
    s.add_argument("files", nargs="+", help="model files (paths or checkpoint names)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_hash)

    s = csub.add_parser("convert", help=".ckpt/.pt/.bin -> .safetensors (safe load, never runs pickle code)")
    s.add_argument("source")
    s.add_argument("-o", "--output", help="output .safetensors (default: next to the source)")
    s.add_argument("--dtype", choices=DTYPES, default="keep")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_convert)

    s = csub.add_parser("prune", help="drop EMA/training state, cast to fp16/bf16, fix CLIP position_ids")
    s.add_argument("source")
    s.add_argument("-o", "--output", help="output .safetensors (default: <name>-pruned.safetensors)")
    s.add_argument("--ema", choices=("drop", "use", "keep"), default="drop",
                   help="drop EMA weights, use them as the model, or keep both (default drop)")
    s.add_argument("--dtype", choices=DTYPES, default="fp16")
    s.add_argument("--keep-extra", action="store_true",
                   help="keep tensors outside UNet/text encoder/VAE (e.g. alphas_cumprod)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_prune)

    s = csub.add_parser("merge", help="streaming merge of 2 or 3 checkpoints",
                        description="Merge A and B (and C) one tensor at a time. Methods: weighted_sum "
                                    "(1-a)A+aB; add_difference A+a(B-C); train_difference; ties (base C, "
                                    "sum sign election); dare (seeded random drop).")
    s.add_argument("a", help="primary model (its VAE, text encoder and extras are kept by default)")
    s.add_argument("b", help="secondary model")
    s.add_argument("c", nargs="?", help="tertiary model: the common base for add/train difference, TIES, DARE")
    s.add_argument("-o", "--output", help="output .safetensors (default: models/Stable-diffusion/<a>-<b>-"
                                          "<method>.safetensors)")
    s.add_argument("-m", "--method", choices=METHODS, default="weighted_sum")
    s.add_argument("-a", "--alpha", type=float, default=0.5, help="multiplier M (default 0.5)")
    s.add_argument("--blocks", help="block weights: 26 values for SD1/SD2 or 20 for SDXL (BASE first), "
                                    "or names like 'IN00=0.2,M00=1,OUT11=0'")
    s.add_argument("--density", type=float, default=0.2, help="TIES: fraction of each difference kept")
    s.add_argument("--drop-rate", type=float, default=0.5, help="DARE: probability of dropping an entry")
    s.add_argument("--seed", type=int, default=0, help="DARE random seed")
    s.add_argument("--dtype", choices=DTYPES, default="fp16")
    s.add_argument("--vae", choices=("a", "merge", "none"), default="a",
                   help="keep A's VAE (default), merge VAEs, or leave the VAE out")
    s.add_argument("--bake-vae", help="VAE file (or name in models/VAE) to put in the result")
    s.add_argument("--keep-a-text-encoder", action="store_true")
    s.add_argument("--device", help="compute device (default: cuda if available, else cpu)")
    s.add_argument("--name", default="", help="custom name recorded in the recipe")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_merge)

    s = csub.add_parser("lora-bake", help="bake kohya LoRAs into a checkpoint, streaming")
    s.add_argument("model")
    s.add_argument("--lora", action="append", required=True, metavar="FILE[:RATIO]",
                   help="LoRA path or name in models/Lora, with an optional ratio (default 1); repeatable")
    s.add_argument("-o", "--output", help="output .safetensors (default: <model>-lora.safetensors)")
    s.add_argument("--dtype", choices=DTYPES, default="keep")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_lora_bake)

    p.set_defaults(func=lambda args: p.print_help() or 2)


def _resolve(args: argparse.Namespace, name: str, kind: str = "checkpoint") -> Path:
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from sdcloud.catalog import Catalog

    try:
        return Catalog(load_settings(args)).resolve(kind, name).path
    except NotFound:
        raise NotFound(f"'{name}' is neither a file nor a {kind} in the model folders; "
                       "run 'sdcloud models list'") from None


def _dtype(value: str) -> str | None:
    return None if value == "keep" else value


@contextmanager
def _bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar driven by ``progress(done, total)`` callbacks (bytes)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_inspect(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.inspection import inspect_checkpoint

    path = _resolve(args, args.model)
    with _bar(f"hashing {path.name}") as progress:
        report = inspect_checkpoint(path, with_hashes=args.hash, progress=progress)
    if args.json:
        data = asdict(report)
        if report.hashes:
            data["hashes"].update(short=report.hashes.short, lora_short=report.hashes.lora_short)
        _print(data)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=str(path), show_header=False)
    t.add_row("architecture", report.architecture + (f"  ({report.variant})" if report.variant not in
                                                     (None, "base") else ""))
    t.add_row("evidence", "\n".join(report.evidence))
    t.add_row("prediction", report.prediction)
    t.add_row("format / size", f"{report.format}, {report.size / 1e9:.2f} GB, {report.tensors} tensors")
    t.add_row("parameters", f"{report.parameters / 1e6:,.1f} M")
    t.add_row("dtypes", ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in sorted(report.dtypes.items())))
    t.add_row("components", ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in report.components.items()))
    flags = (report.has_ema, report.has_vae, report.has_text_encoder)
    t.add_row("EMA / VAE / text encoder", " / ".join("yes" if x else "no" for x in flags))
    if report.missing:
        t.add_row("[red]missing keys[/]", ", ".join(f"{k}: {v}" for k, v in report.missing.items()))
    if report.hashes:
        h = report.hashes
        t.add_row("hashes", f"short {h.short}  AutoV1 {h.autov1}  sha256 {h.sha256}"
                  + (f"\naddnet {h.addnet}" if h.addnet else ""))
    for k, v in report.metadata.items():
        t.add_row(f"meta {k}", v if len(v) < 200 else v[:200] + "...")
    Console().print(t)
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.hashing import compute_hashes

    rows = []
    for name in args.files:
        path = _resolve(args, name)
        with _bar(f"hashing {path.name}") as progress:
            h = compute_hashes(path, _byte_counter(progress, path.stat().st_size))
        rows.append({"file": str(path), "short": h.short, "autov1": h.autov1, "sha256": h.sha256,
                     "addnet": h.addnet, "lora_short": h.lora_short})
    if args.json:
        _print({"files": rows})
        return 0
    for r in rows:
        print(f"{r['file']}\n  A1111 short hash / AutoV2: {r['short']}\n  AutoV1 (legacy): {r['autov1']}\n"
              f"  sha256: {r['sha256']}" + (f"\n  LoRA/addnet: {r['addnet']} (A1111 {r['lora_short']})"
                                            if r["addnet"] else ""))
    return 0


def _byte_counter(progress: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return tick


def _default_output(source: Path, suffix: str) -> Path:
    return source.with_name(f"{source.stem}{suffix}.safetensors")


def cmd_convert(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.prune import ConvertOptions, convert_checkpoint

    src = _resolve(args, args.source)
    out = Path(args.output) if args.output else _default_output(src, "")
    with _bar(f"converting {src.name}") as progress:
        res = convert_checkpoint(ConvertOptions(src, out, _dtype(args.dtype), args.overwrite), progress)
    print(f"wrote {res.path} ({res.tensors} tensors, {res.bytes_out / 1e9:.2f} GB, hash {res.hashes.short})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.prune import PruneOptions, prune_checkpoint

    src = _resolve(args, args.source)
    out = Path(args.output) if args.output else _default_output(src, "-pruned")
    opts = PruneOptions(src, out, ema=args.ema, dtype=_dtype(args.dtype), keep_extra=args.keep_extra,
                        overwrite=args.overwrite)
    with _bar(f"pruning {src.name}") as progress:
        res = prune_checkpoint(opts, progress)
    print(f"wrote {res.path}: {res.bytes_in / 1e9:.2f} GB -> {res.bytes_out / 1e9:.2f} GB, "
          f"{res.tensors} tensors kept, {len(res.dropped)} dropped, hash {res.hashes.short}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.hashing import HashCache
    from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints

    settings = load_settings(args)
    a, b = _resolve(args, args.a), _resolve(args, args.b)
    c = _resolve(args, args.c) if args.c else None
    if args.output:
        out = Path(args.output)
    else:
        out = settings.checkpoints_path / f"{a.stem}-{b.stem}-{args.method}.safetensors"
    if not 0.0 <= args.alpha <= 1.0 and args.method == "weighted_sum":
        raise BadRequest("alpha for weighted sum must be between 0 and 1")
    opts = MergeOptions(
        a=a, b=b, c=c, output=out, method=args.method, alpha=args.alpha, block_weights=args.blocks,
        density=args.density, drop_rate=args.drop_rate, seed=args.seed, dtype=_dtype(args.dtype),
        vae=args.vae, bake_vae=_resolve(args, args.bake_vae, "vae") if args.bake_vae else None,
        keep_a_text_encoder=args.keep_a_text_encoder, device=args.device, overwrite=args.overwrite,
        custom_name=args.name,
    )
    with _bar("merging") as progress:
        res = merge_checkpoints(opts, progress, HashCache(settings.state_path / "hashes.json"))
    print(f"wrote {res.path} ({res.arch}, {res.merged} tensors merged, {res.copied_from_a} copied from A, "
          f"{res.seconds:.1f} s, hash {res.hashes.short})")
    if res.missing_in_others:
        print(f"note: {len(res.missing_in_others)} tensors exist only in A and were copied, e.g. "
              f"{res.missing_in_others[0]}")
    return 0


def _lora_arg(args: argparse.Namespace, value: str) -> tuple[Path, float]:
    name, ratio = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep:
        try:
            name, ratio = head, float(tail)
        except ValueError:
            name = value
    return _resolve(args, name, "lora"), ratio


def cmd_lora_bake(args: argparse.Namespace) -> int:
    from sdcloud.checkpoints.lora_bake import LoraBakeOptions, bake_loras

    model = _resolve(args, args.model)
    loras = tuple(_lora_arg(args, v) for v in args.lora)
    out = Path(args.output) if args.output else _default_output(model, "-lora")
    with _bar(f"baking into {model.name}") as progress:
        res = bake_loras(LoraBakeOptions(model, loras, out, _dtype(args.dtype), args.overwrite), progress)
    applied = ", ".join(f"{k}: {v} modules" for k, v in res.applied.items())
    print(f"wrote {res.path} ({applied}; hash {res.hashes.short})")
    for name, missed in res.unmatched.items():
        print(f"note: {len(missed)} modules of {name} match nothing in the model, e.g. {missed[0]}")
    return 0
