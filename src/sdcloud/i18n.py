"""The command line's language: English or Japanese, from ``--lang``, ``SDCLOUD_LANG`` or the
usual ``LANGUAGE`` / ``LC_ALL`` / ``LC_MESSAGES`` / ``LANG`` variables.

Messages are gettext catalogs (``sdcloud/locale/<lang>/LC_MESSAGES/sdcloud.po``, compiled to
``.mo``; ``scripts/i18n.py`` extracts and compiles them with Babel). Code marks a message with
``_("...")``; the help texts of the argparse tree are translated in one pass
(:func:`translate_parser`), so command modules keep plain English ``help=`` strings and a new
flag needs only its catalog entry. No heavy imports: ``sdcloud --help`` stays instant.
"""

from __future__ import annotations

import argparse
import gettext
import os
from collections.abc import Mapping
from pathlib import Path

DOMAIN = "sdcloud"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SUPPORTED = ("en", "ja")
DEFAULT = "en"
# gettext's own order of precedence
ENV_VARS = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

_active: gettext.NullTranslations = gettext.NullTranslations()
_language = DEFAULT


def normalize(tag: str | None) -> str | None:
    """``ja_JP.UTF-8`` / ``ja-JP`` / ``JA`` -> ``ja``; ``C`` / ``POSIX`` / empty -> None."""
    if not tag:
        return None
    base = tag.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return None if base in ("", "c", "posix") else base


def resolve_language(explicit: str | None = None,
                     environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(language, warning). ``explicit`` (``--lang``) beats ``SDCLOUD_LANG`` beats the locale
    variables. A language asked for by name that we do not have gives English and a one-line
    warning; a locale variable naming another language quietly gives English."""
    env = os.environ if environ is None else environ
    asked = explicit or env.get("SDCLOUD_LANG")
    if asked:
        lang = normalize(asked)
        if lang in SUPPORTED:
            return lang, None
        return DEFAULT, (f"sdcloud: language {asked!r} is not available (choose from "
                         f"{', '.join(SUPPORTED)}); using English")
    for var in ENV_VARS:
        for tag in env.get(var, "").split(":"):  # LANGUAGE may list several
            lang = normalize(tag)
            if lang in SUPPORTED:
                return lang, None
            if lang:  # the first real language decides, as gettext does
                return DEFAULT, None
    return DEFAULT, None


def explicit_language(asked: str | None) -> str | None:
    """The language a ``--lang`` / ``SDCLOUD_LANG`` value means: a supported one, English for
    any other (the CLI has said so in one line), None when nothing was asked."""
    if not asked or not asked.strip():
        return None
    lang = normalize(asked)
    return lang if lang in SUPPORTED else DEFAULT


def activate(language: str) -> None:
    """Use ``language``'s catalog for :func:`_` (English: the messages as written)."""
    global _active, _language
    _language = language if language in SUPPORTED else DEFAULT
    _active = gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[_language], fallback=True)
    # argparse's own words ("usage:", "options", "show this help message and exit" ...) are in
    # our catalog too; argparse looks them up through its module-level gettext functions.
    argparse._ = _  # type: ignore[attr-defined]
    argparse.ngettext = ngettext  # type: ignore[attr-defined]


def current_language() -> str:
    return _language


def _(message: str) -> str:
    """``message`` in the active language (itself when there is no translation)."""
    return _active.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _active.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it now."""
    return message


def parser_texts(parser: argparse.ArgumentParser) -> list[str]:
    """Every help text and description in the argparse tree below ``parser`` (for extraction)."""
    texts: list[str] = []
    _walk(parser, texts.append)
    return list(dict.fromkeys(t for t in texts if t))


def translate_parser(parser: argparse.ArgumentParser) -> None:
    """Translate the tree's help texts and descriptions in place."""
    _walk(parser, None)


def _walk(parser: argparse.ArgumentParser, collect: object) -> None:
    seen: set[int] = set()

    def text(value: str | None) -> str | None:
        if not value or value == argparse.SUPPRESS:
            return value
        if collect is not None:
            collect(value)  # type: ignore[operator]
            return value
        return _(value)

    def visit(p: argparse.ArgumentParser) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        p.description = text(p.description)
        for action in p._actions:
            action.help = text(action.help)
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    choice.help = text(choice.help)
                for child in action.choices.values():
                    visit(child)

    visit(parser)
