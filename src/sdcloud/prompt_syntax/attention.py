"""A1111 attention syntax: ``(word)``, ``(word:1.3)``, ``[word]``, escapes and ``BREAK``."""

from __future__ import annotations

import re

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The entry :func:`parse_prompt_attention` emits for the ``BREAK`` keyword, and the marker
:func:`weighted_tokens` passes on to :func:`split_chunks`."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One lexical unit of the attention syntax, tried in this order at each position.
_ATTENTION_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\])        # \( \) \[ \] \\  -> the literal character
    | (?P<backslash>\\)               # any other backslash is dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # ":1.3)" closes a round bracket with that weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+)
    | (?P<colon>:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` pieces by A1111's emphasis rules.

    ``(a)`` multiplies by 1.1, ``[a]`` divides by 1.1, ``(a:w)`` multiplies by ``w``; nesting
    multiplies. ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters. Brackets
    left open at the end apply to the rest of the prompt; a stray closing bracket is text.
    ``BREAK`` (upper-case word) becomes the :data:`BREAK` entry, never weighted. Adjacent
    pieces of equal weight are merged and empty pieces dropped; an empty prompt gives
    ``[("", 1.0)]``.
    """
    pieces: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if not piece[2]:
                piece[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK_SPLIT.split(chunk)):
            if i:
                pieces.append([BREAK[0], BREAK[1], True])
            pieces.append([part, 1.0, False])

    for m in _ATTENTION_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "escape":
            pieces.append([m[0][1], 1.0, False])
        elif kind == "open":
            (round_open if m[0] == "(" else square_open).append(len(pieces))
        elif kind == "weight" and round_open:
            if _is_float(m["weight"]):
                multiply_from(round_open.pop(), float(m["weight"]))
            else:  # "(a:1.2.3)": the would-be weight is text, the bracket closes as "(a)"
                add_text(m[0][:-1].rstrip())
                multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and m[0] == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and m[0] == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        elif kind != "backslash":
            add_text(m[0])

    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for piece_text, weight, is_break in pieces:
        if is_break:
            merged.append(BREAK)
        elif not piece_text:
            continue
        elif merged and merged[-1] is not BREAK and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + piece_text, weight)
        else:
            merged.append((piece_text, weight))
    return merged or [("", 1.0)]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
