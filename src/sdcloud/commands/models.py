"""``sdcloud models``: list what is in the model folders (and, with the storage module,
pull/push models)."""

from __future__ import annotations

import argparse
import json

from sdcloud.commands._common import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, pull and push models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = msub.add_parser("list", help="show checkpoints, VAEs, LoRAs and embeddings")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)
    from sdcloud.commands.storage import add_model_commands

    add_model_commands(msub)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def cmd_list(args: argparse.Namespace) -> int:
    from sdcloud.catalog import DEMO_MODELS, Catalog

    settings = load_settings(args)
    cat = Catalog(settings)
    groups = {
        "checkpoints": cat.checkpoints(),
        "vae": cat.vaes(),
        "lora": cat.loras(),
        "embeddings": cat.embeddings(),
    }
    if args.json:
        out = {k: [{"name": m.name, "path": str(m.path), "size": m.size} for m in v] for k, v in groups.items()}
        out["builtin"] = list(DEMO_MODELS)
        print(json.dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {settings.data_dir}")
    for col in ("kind", "name", "size"):
        table.add_column(col)
    for kind, items in groups.items():
        for m in items:
            table.add_row(kind, m.name, f"{m.size / 1e6:,.1f} MB")
    for name in DEMO_MODELS:
        table.add_row("builtin", name, "demo (random weights)")
    Console().print(table)
    return 0
