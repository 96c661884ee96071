"""Caption files and kohya's caption options (shuffle, keep first N tags, tag and caption dropout)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


class CaptionEncodingError(ValueError):
    """A caption file that is not UTF-8 (the message names a likely encoding)."""


def read_caption(path: Path) -> str:
    """The caption text of ``path`` (UTF-8, a BOM allowed, or UTF-16 with its BOM); one line of
    text, whitespace trimmed.

    Japanese editors often save Shift_JIS (cp932); we refuse to guess and say so, because a
    wrongly decoded caption silently trains the wrong words.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows Notepad's "Unicode": UTF-16 with a BOM says so
        try:
            return _one_line(data.decode("utf-16"))
        except UnicodeDecodeError:
            raise CaptionEncodingError(f"caption {path.name} starts like UTF-16 but is damaged; re-save it as "
                                       "UTF-8") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        hint = ""
        for enc in ("cp932", "euc_jp", "gbk", "cp1252"):
            try:
                data.decode(enc)
            except UnicodeDecodeError:
                continue
            hint = f" (it looks like {enc})"
            break
        raise CaptionEncodingError(f"caption {path.name} is not UTF-8{hint}; re-save it as UTF-8") from None
    if "\x00" in text:
        raise CaptionEncodingError(f"caption {path.name} holds NUL bytes (UTF-16 without a BOM?); re-save it as "
                                   "UTF-8")
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.replace("\r", "\n").split("\n")).strip()


@dataclass(frozen=True)
class CaptionOptions:
    """kohya's ``shuffle_caption``, ``keep_tokens``, ``caption_tag_dropout_rate``,
    ``caption_dropout_rate`` and ``keep_tokens_separator``."""

    shuffle: bool = False
    keep_tokens: int = 0
    tag_dropout: float = 0.0
    dropout: float = 0.0
    separator: str = ","
    keep_tokens_separator: str = ""


def process_caption(caption: str, opts: CaptionOptions, rng: random.Random) -> str:
    """Apply the caption options with ``rng`` (seeded per step, so a resumed run repeats them)."""
    if opts.dropout > 0 and rng.random() < opts.dropout:
        return ""
    if not (opts.shuffle or opts.tag_dropout > 0):
        return caption
    if opts.keep_tokens_separator and opts.keep_tokens_separator in caption:
        fixed_text, _, rest_text = caption.partition(opts.keep_tokens_separator)
        fixed = [t.strip() for t in fixed_text.split(opts.separator) if t.strip()]
        rest = [t.strip() for t in rest_text.split(opts.separator) if t.strip()]
    else:
        tags = [t.strip() for t in caption.split(opts.separator) if t.strip()]
        fixed, rest = tags[:opts.keep_tokens], tags[opts.keep_tokens:]
    if opts.tag_dropout > 0:
        rest = [t for t in rest if rng.random() >= opts.tag_dropout]
    if opts.shuffle:
        rng.shuffle(rest)
    return ", ".join(fixed + rest)
