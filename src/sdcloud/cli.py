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
from typing import Any

from sdcloud import __version__
from sdcloud.errors import SdcloudError

# Options every command takes, before or after its name (``sdcloud serve --data-dir X``).
GLOBAL_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--data-dir", {"help": "data folder (A1111 layout); env SDCLOUD_DATA_DIR"}),
    ("--config", {"help": "TOML config file; env SDCLOUD_CONFIG"}),
    ("--lang", {"metavar": "ja|en", "help": "language of messages and of the web UI (default: "
                "LANGUAGE/LC_ALL/LANG; the UI follows the browser); env SDCLOUD_LANG"}),
)


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """On a command's parser the defaults are suppressed, so a value given before the command
    name is not reset by the command's own (absent) copy of the option."""
    for flag, kwargs in GLOBAL_OPTIONS:
        if any(flag in a.option_strings for a in parser._actions):
            continue
        extra = {"default": argparse.SUPPRESS} if after_command else {}
        parser.add_argument(flag, **kwargs, **extra)


def _command_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (commands and their actions), each once."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_command_parsers(child)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdcloud",
        description="Stable Diffusion on rented GPUs: generate, serve, store, merge, plan.",
    )
    parser.add_argument("--version", action="version", version=f"sdcloud {__version__}")
    _add_global_options(parser, after_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import sdcloud.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sdcloud.commands.{info.name}")
        module.register(sub)
    for child in _command_parsers(parser):
        _add_global_options(child, after_command=True)
    return parser


def _lang_flag(argv: Sequence[str]) -> str | None:
    """``--lang X`` / ``--lang=X`` anywhere on the line (read before the parser, whose help
    texts are in that language)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return None


def setup_language(argv: Sequence[str]) -> str:
    """Pick and activate the language; say so in one line when the one asked for is missing."""
    from sdcloud.i18n import activate, resolve_language

    language, warning = resolve_language(_lang_flag(argv))
    if warning:
        print(warning, file=sys.stderr)
    activate(language)
    return language


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_language(argv)
    from sdcloud.i18n import _, translate_parser

    parser = build_parser()
    translate_parser(parser)
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
        print(_("sdcloud: interrupted"), file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
