"""The ``sdcloud`` command line: parse, call, print.

Command groups live in ``sdcloud.commands.*``; each registers its own sub-commands. This
module imports none of torch/diffusers so ``sdcloud --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from sdcloud import __version__
from sdcloud.errors import SdcloudError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdcloud",
        description="Stable Diffusion on rented GPUs: generate, serve, store, merge, plan.",
    )
    parser.add_argument("--version", action="version", version=f"sdcloud {__version__}")
    parser.add_argument("--data-dir", help="data folder (A1111 layout); env SDCLOUD_DATA_DIR")
    parser.add_argument("--config", help="TOML config file; env SDCLOUD_CONFIG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import sdcloud.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sdcloud.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SdcloudError as err:
        print(f"sdcloud: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sdcloud: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
