"""Past outputs, one page at a time: A1111's "image browser" over the outputs folder.

``outputs/<kind folder>/YYYY-MM-DD/NNNNN-<seed>.png`` (see :mod:`sdcloud.outputs`) is browsed
by kind and date folder, newest first. Every request does bounded work: a page holds at most
:data:`MAX_PER_PAGE` images, and a search by prompt reads the infotext of at most
:data:`SEARCH_SCAN_LIMIT` files (newest first) and says when it stopped early. Infotexts read
once are kept in a small cache keyed by the file's size and modification time.

Also here: the checks that keep a client-given path inside the outputs folder, and Save
(copies under ``outputs/save`` with A1111's ``log.csv``) and Zip of a set of results.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, NotFound, SdcloudError

KINDS: dict[str, str] = {
    "txt2img": "txt2img-images",
    "img2img": "img2img-images",
    "extras": "extras-images",
    "txt2img-grids": "txt2img-grids",
    "img2img-grids": "img2img-grids",
    "save": "save",
}
"""History kind -> folder under outputs. ``save`` (the Save button's copies) has no date folders."""
FLAT_KINDS = ("save",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SERVED_SUFFIXES = (*IMAGE_SUFFIXES, ".zip", ".csv", ".txt")
"""What the file route serves from the outputs folder: images, Zip downloads, log.csv, sidecars."""
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 36
SEARCH_SCAN_LIMIT = 3000
"""Files whose infotext one search request may read (newest first)."""
MAX_LISTED = 100_000
"""File names one request may list (a date folder holds a few hundred to a few thousand)."""
CACHE_ENTRIES = 20_000
ALL_DATES = "all"
SAVE_FOLDER = "save"
LOG_CSV_HEADER = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt"]
"""A1111's ``log.csv`` columns (the Save button's log in ``outdir_save``)."""

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COUNTER = re.compile(r"^(\d{5})-")


@dataclass
class HistoryItem:
    """One image: ``path`` is relative to the outputs folder (the file route's ``path``)."""

    path: str
    name: str
    date: str | None
    size: int
    mtime: float
    infotext: str


@dataclass
class HistoryPage:
    kind: str
    date: str | None
    dates: list[str]
    q: str
    page: int
    per_page: int
    items: list[HistoryItem] = field(default_factory=list)
    total: int | None = None  # images (or search matches) in all; None when a search stopped early
    pages: int | None = None
    has_more: bool = False
    scanned: int = 0  # files whose infotext a search read
    complete: bool = True  # False when a search stopped at SEARCH_SCAN_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadRequest(f"unknown history kind '{kind}'; use one of: {', '.join(KINDS)}")
    return kind


def relative_output(root: Path, path: str) -> Path:
    """The file ``path`` (relative to the outputs folder ``root``) names, refusing any path that
    could leave it: absolute, ``..``, backslashes, NUL, or a link that resolves outside."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\0" in path or ":" in parts[0]
            or any(p in ("", ".", "..") for p in parts)):
        raise BadRequest(f"'{path[:200]}' is not a path inside the outputs folder")
    if not path.lower().endswith(SERVED_SUFFIXES):
        raise BadRequest(f"only images, .zip, .csv and .txt files are served from the outputs folder: '{path[:200]}'")
    real_root = root.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(real_root):
        raise BadRequest(f"'{path[:200]}' leads outside the outputs folder")
    if not target.is_file():
        raise NotFound(f"no file '{path[:200]}' in the outputs folder")
    return target


class History:
    """Browse, search, save and zip the outputs under ``root`` (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()

    # browsing --------------------------------------------------------------------------
    def folder(self, kind: str) -> Path:
        return self.root / KINDS[check_kind(kind)]

    def dates(self, kind: str) -> list[str]:
        """The kind's date folders, newest first (none for a flat kind)."""
        folder = self.folder(kind)
        if kind in FLAT_KINDS or not folder.is_dir():
            return []
        with os.scandir(folder) as entries:
            return sorted((e.name for e in entries if _DATE.match(e.name) and e.is_dir()), reverse=True)

    def _names(self, folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        names: list[str] = []
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith("."):
                    names.append(e.name)
                    if len(names) >= MAX_LISTED:
                        break
        return sorted(names, key=_newest_first_key, reverse=True)

    def _files(self, kind: str, dates: list[str]) -> Iterator[tuple[str | None, str]]:
        """(date, relative path) of every image, newest first, folder by folder (lazily)."""
        base = KINDS[kind]
        if kind in FLAT_KINDS:
            yield from ((None, f"{base}/{n}") for n in self._names(self.folder(kind)))
            return
        for date in dates:
            yield from ((date, f"{base}/{date}/{n}") for n in self._names(self.folder(kind) / date))

    def page(self, kind: str, date: str | None = None, q: str = "", page: int = 0,
             per_page: int = DEFAULT_PER_PAGE) -> HistoryPage:
        """One page of ``kind``'s images on ``date`` (default: the newest day; ``"all"``: every
        day), newest first; with ``q``, only images whose infotext holds every word of it."""
        check_kind(kind)
        if page < 0:
            raise BadRequest("page starts at 0")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise BadRequest(f"per_page must be 1 to {MAX_PER_PAGE}")
        q = (q or "").strip()
        if len(q) > 500:
            raise BadRequest("the search text is longer than 500 characters")
        all_dates = self.dates(kind)
        if kind in FLAT_KINDS:
            date, chosen = None, []
        elif not date:
            date = all_dates[0] if all_dates else None
            chosen = all_dates[:1]
        elif date == ALL_DATES:
            chosen = all_dates
        else:
            if not _DATE.match(date):
                raise BadRequest(f"date must be YYYY-MM-DD or '{ALL_DATES}', not '{date[:40]}'")
            if date not in all_dates:
                raise NotFound(f"no {kind} outputs on {date}")
            chosen = [date]
        result = HistoryPage(kind=kind, date=date, dates=all_dates, q=q, page=page, per_page=per_page)
        start = page * per_page
        if not q:
            files = list(self._files(kind, chosen))
            result.total = len(files)
            result.pages = max(1, -(-len(files) // per_page))
            result.has_more = start + per_page < len(files)
            result.items = [self._item(d, p) for d, p in files[start:start + per_page]]
            return result
        return self._search(result, self._files(kind, chosen), q, start)

    def _search(self, result: HistoryPage, files: Iterable[tuple[str | None, str]], q: str,
                start: int) -> HistoryPage:
        words = q.lower().split()
        matches: list[tuple[str | None, str, str]] = []
        want = start + result.per_page + 1  # one more than the page: is there a next page?
        exhausted, limited = True, False
        for date, rel in files:
            if result.scanned >= SEARCH_SCAN_LIMIT:
                exhausted, limited = False, True
                break
            result.scanned += 1
            text = self.infotext(rel)
            haystack = f"{text}\n{rel}".lower()
            if all(w in haystack for w in words):
                matches.append((date, rel, text))
                if len(matches) >= want:
                    exhausted = False
                    break
        result.complete = not limited
        result.has_more = len(matches) > start + result.per_page or limited
        if exhausted:
            result.total = len(matches)
            result.pages = max(1, -(-len(matches) // result.per_page))
        result.items = [self._item(d, p, t) for d, p, t in matches[start:start + result.per_page]]
        return result

    def _item(self, date: str | None, rel: str, text: str | None = None) -> HistoryItem:
        path = self.root / rel
        try:
            st = path.stat()
        except OSError:
            size, mtime = 0, 0.0
        else:
            size, mtime = st.st_size, st.st_mtime
        return HistoryItem(path=rel, name=path.name, date=date, size=size, mtime=mtime,
                           infotext=self.infotext(rel) if text is None else text)

    def infotext(self, rel: str) -> str:
        """The file's infotext ("" for none or an unreadable file), cached by size and mtime."""
        path = self.root / rel
        try:
            st = path.stat()
        except OSError:
            return ""
        key = (rel, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        from sdcloud.image_files import read_image_infotext

        try:
            text = read_image_infotext(path) or ""
        except SdcloudError:
            text = ""
        with self._lock:
            self._cache[key] = text
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return text

    def file(self, rel: str) -> Path:
        """The served file for a client-given path (4xx for anything outside the outputs)."""
        return relative_output(self.root, rel)

    # Save and Zip ----------------------------------------------------------------------
    def _inside(self, path: str | Path) -> Path:
        p = Path(path).resolve()
        if not p.is_relative_to(self.root.resolve()) or not p.is_file():
            raise BadRequest(f"'{Path(path).name}' is not an image in the outputs folder")
        return p

    def save(self, paths: Iterable[str | Path]) -> list[Path]:
        """Copy result images into ``outputs/save`` as ``NNNNN-<seed>.<ext>`` (bytes unchanged:
        the infotext goes along) and add one row per image to ``log.csv`` (A1111's columns).
        Every copy and the log are fsync'd. Returns the copies."""
        from sdcloud.durable import fsync_dir
        from sdcloud.infotext import parse_infotext

        sources = [self._inside(p) for p in paths]
        if not sources:
            raise BadRequest("no images to save; generate first")
        folder = self.root / SAVE_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        rows: list[list[str]] = []
        with self._save_lock:
            number = _next_number(folder)
            for i, src in enumerate(sources):
                text = self.infotext(src.relative_to(self.root.resolve()).as_posix())
                p = parse_infotext(text) if text else {}
                seed = p.get("Seed") or src.stem.split("-")[-1]
                stem = "grid" if src.name.startswith(("grid", "xyz_grid")) else _safe_name(seed)
                dest = folder / f"{number + i:05d}-{stem}{src.suffix.lower()}"
                tmp = dest.with_name(f".{dest.name}.tmp")
                with open(src, "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                    fout.flush()
                    os.fsync(fout.fileno())
                os.replace(tmp, dest)
                saved.append(dest)
                rows.append([p.get("Prompt", ""), p.get("Seed", ""), p.get("Size-1", ""), p.get("Size-2", ""),
                             p.get("Sampler", ""), p.get("CFG scale", ""), p.get("Steps", ""), dest.name,
                             p.get("Negative prompt", "")])
            _append_log(folder / "log.csv", rows)
            fsync_dir(folder)
        return saved

    def zip(self, paths: Iterable[str | Path], dest_dir: Path, model: str | None = None) -> Path:
        """A Zip of the result images in ``dest_dir`` (streamed file by file, stored not
        recompressed: PNGs are compressed already), named like A1111's
        ``[datetime]_[[model_name]]_[seed]-[seed_last]``."""
        sources = [self._inside(p) for p in paths]
        if not sources:
            raise BadRequest("no images to zip; generate first")
        seeds = [s.stem.split("-")[-1] for s in sources if _COUNTER.match(s.name)] or ["images"]
        model_part = f"_[{_safe_name(model)[:60]}]" if model else ""
        name = f"{time.strftime('%Y%m%d%H%M%S')}{model_part}_{seeds[0]}-{seeds[-1]}.zip"
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / name
        used: set[str] = set()
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
            for src in sources:
                arcname = src.name
                while arcname in used:  # grids of two days may share a name
                    arcname = f"_{arcname}"
                used.add(arcname)
                zf.write(src, arcname)
        return target


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]", "", text)


def _newest_first_key(name: str) -> tuple[int, str]:
    """Sort key: the counter (``00012-...``, ``grid-00012-...``) then the name."""
    m = re.search(r"(\d{5})-", name)
    return (int(m.group(1)) if m else -1, name)


def _next_number(folder: Path) -> int:
    with os.scandir(folder) as entries:
        numbers = [int(m.group(1)) for e in entries if (m := _COUNTER.match(e.name))]
    return max(numbers, default=-1) + 1


def _append_log(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    if not path.exists() or path.stat().st_size == 0:
        writer.writerow(LOG_CSV_HEADER)
    writer.writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
