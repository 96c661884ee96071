"""The command line's message catalogs, with Babel (a dev dependency):

    python scripts/i18n.py extract   # src/sdcloud/locale/sdcloud.pot from _("...") calls and the help texts
    python scripts/i18n.py update    # merge the template into each <lang>/LC_MESSAGES/sdcloud.po
    python scripts/i18n.py compile   # .po -> .mo (the .mo files are committed: the package needs no Babel)
    python scripts/i18n.py check     # exit 1 if a message has no translation or a .mo is stale

A new message: mark it ``_("...")`` (or add a ``help=``), run ``extract`` and ``update``, write its
``msgstr`` in ``ja/LC_MESSAGES/sdcloud.po``, run ``compile``. The web UI's strings are not here:
they are in ``src/sdcloud/ui/i18n.py``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from babel.messages.catalog import Catalog  # noqa: E402
from babel.messages.extract import extract_from_dir  # noqa: E402
from babel.messages.mofile import read_mo, write_mo  # noqa: E402
from babel.messages.pofile import read_po, write_po  # noqa: E402

from sdcloud.i18n import DOMAIN, LOCALE_DIR, SUPPORTED  # noqa: E402

TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}

# argparse's own words, looked up through our catalog (sdcloud.i18n.activate); Python 3.10-3.13 forms.
ARGPARSE = (
    "usage: ", "positional arguments", "options", "optional arguments", "show this help message and exit",
    "show program's version number and exit", "%(prog)s: error: %(message)s\n",
    "the following arguments are required: %s", "unrecognized arguments: %s",
    "invalid choice: %(value)r (choose from %(choices)s)", "expected one argument",
    "argument %(argument_name)s: %(message)s", "invalid %(type)s value: %(value)r",
    "ambiguous option: %(option)s could match %(matches)s", "not allowed with argument %s",
)


def template() -> Catalog:
    from sdcloud.cli import build_parser
    from sdcloud.i18n import activate, parser_texts

    activate("en")
    cat = Catalog(project="sdcloud", domain=DOMAIN, charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
        str(SRC / "sdcloud"), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        cat.add(message, locations=[(f"src/sdcloud/{filename}", lineno)], auto_comments=comments,
                context=context)
    for text in parser_texts(build_parser()):
        cat.add(text, auto_comments=["command-line help"])
    for text in ARGPARSE:
        cat.add(text, auto_comments=["argparse"], flags=["python-format"] if "%" in text else ())
    return cat


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def translated_languages() -> list[str]:
    return [lang for lang in SUPPORTED if lang != "en"]


def extract() -> None:
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    with TEMPLATE.open("wb") as f:
        write_po(f, template(), omit_header=False, sort_output=True, width=100)


def update() -> None:
    tmpl = template()
    for lang in translated_languages():
        path = po_path(lang)
        if path.exists():
            with path.open("rb") as f:
                cat = read_po(f, locale=lang, domain=DOMAIN)
        else:
            cat = Catalog(locale=lang, domain=DOMAIN, project="sdcloud", charset="utf-8")
        cat.update(tmpl, no_fuzzy_matching=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            write_po(f, cat, sort_output=True, width=100, ignore_obsolete=True)


def compile_all() -> None:
    for lang in translated_languages():
        with po_path(lang).open("rb") as f:
            cat = read_po(f, locale=lang, domain=DOMAIN)
        with po_path(lang).with_suffix(".mo").open("wb") as f:
            write_mo(f, cat, use_fuzzy=False)


def problems() -> list[str]:
    """Messages without a translation, and .mo files that do not match their .po."""
    found: list[str] = []
    tmpl = template()
    for lang in translated_languages():
        path = po_path(lang)
        if not path.exists():
            return [f"{path} is missing; run: python scripts/i18n.py update"]
        with path.open("rb") as f:
            po = read_po(f, locale=lang, domain=DOMAIN)
        for msg in tmpl:
            if not msg.id:
                continue
            entry = po.get(msg.id, context=msg.context)
            if entry is None or not entry.string or entry.fuzzy:
                found.append(f"{lang}: no translation for {msg.id!r} (python scripts/i18n.py update, then write "
                             f"its msgstr in {path.relative_to(ROOT)})")
        mo_path = path.with_suffix(".mo")
        if not mo_path.exists():
            found.append(f"{mo_path.relative_to(ROOT)} is missing; run: python scripts/i18n.py compile")
            continue
        with mo_path.open("rb") as f:
            mo = read_mo(f)
        buf = io.BytesIO()
        write_mo(buf, po, use_fuzzy=False)
        buf.seek(0)
        fresh = read_mo(buf)
        if {m.id: m.string for m in mo if m.id} != {m.id: m.string for m in fresh if m.id}:
            found.append(f"{mo_path.relative_to(ROOT)} is older than its .po; run: python scripts/i18n.py compile")
    return found


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "extract":
        extract()
    elif command == "update":
        extract()
        update()
    elif command == "compile":
        compile_all()
    elif command == "check":
        issues = problems()
        for line in issues:
            print(line)
        return 1 if issues else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
