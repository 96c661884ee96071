"""``styles.csv`` in A1111's format (columns ``name,prompt,negative_prompt``; a ``{prompt}``
in a style's text is replaced by the prompt, else the style is appended after ", ").

Read by ``/sdapi/v1/prompt-styles`` and the ``styles`` request field; the UI saves and deletes
styles here. Writes are atomic (temp file, fsync, rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, NotFound

FIELDS = ("name", "prompt", "negative_prompt")
_lock = threading.Lock()


def read_styles(path: Path) -> list[dict[str, str]]:
    """The styles in ``path`` in file order (a missing or unreadable file has none)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (FileNotFoundError, csv.Error, UnicodeDecodeError):
        return []
    return [{k: (r.get(k) or "") for k in FIELDS} for r in rows if r.get("name")]


def _write(path: Path, styles: list[dict[str, str]]) -> None:
    from sdcloud.durable import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for s in styles:
        writer.writerow({k: s.get(k, "") for k in FIELDS})
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


def save_style(path: Path, name: str, prompt: str, negative_prompt: str) -> list[dict[str, str]]:
    """Add the style ``name`` or replace the one of that name (A1111's Save style)."""
    name = (name or "").strip()
    if not name:
        raise BadRequest("a style needs a name")
    if len(name) > 200 or len(prompt) + len(negative_prompt) > 20000:
        raise BadRequest("style name or text too long")
    with _lock:
        styles = read_styles(path)
        new = {"name": name, "prompt": prompt or "", "negative_prompt": negative_prompt or ""}
        for i, s in enumerate(styles):
            if s["name"] == name:
                styles[i] = new
                break
        else:
            styles.append(new)
        _write(path, styles)
        return styles


def delete_style(path: Path, name: str) -> list[dict[str, str]]:
    with _lock:
        styles = read_styles(path)
        kept = [s for s in styles if s["name"] != name]
        if len(kept) == len(styles):
            raise NotFound(f"style '{name}' not found in styles.csv")
        _write(path, kept)
        return kept


def merge_style(text: str, style: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return f"{text}, {style}" if text else style


def apply_styles(styles: list[dict[str, Any]], names: list[str], prompt: str, negative: str) -> tuple[str, str]:
    """``prompt`` and ``negative`` with the named styles applied in order (unknown names are
    skipped, as A1111 skips them)."""
    by_name = {s["name"]: s for s in styles}
    for name in names:
        style = by_name.get(name)
        if style is not None:
            prompt = merge_style(prompt, style["prompt"])
            negative = merge_style(negative, style["negative_prompt"])
    return prompt, negative
