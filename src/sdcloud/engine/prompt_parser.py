"""A1111 prompt syntax, written from its documented rules (not from A1111's code).

Four independent steps, in the order the engine applies them:

1. :func:`extract_extra_networks` removes ``<lora:name:0.8>``-style tags from the prompt.
2. :func:`get_schedules` resolves prompt editing ``[a:b:when]`` and alternation ``[a|b]``
   into one plain prompt per range of sampling steps.
3. :func:`parse_prompt_attention` turns each plain prompt into ``(text, weight)`` pieces:
   ``(word)``, ``(word:1.3)``, ``[word]``, escapes and ``BREAK``.
4. :func:`weighted_tokens` + :func:`split_chunks` tokenize those pieces and cut them into
   75-token chunks the way A1111 does (``BREAK`` and comma backtracking); the engine encodes
   each chunk with BOS/EOS as 77 tokens and concatenates the results.

Pure Python; no torch, no tokenizer: the engine passes its tokenizer in as a callable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sdcloud.errors import BadRequest

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The entry :func:`parse_prompt_attention` emits for the ``BREAK`` keyword, and the marker
:func:`weighted_tokens` passes on to :func:`split_chunks`."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# ----------------------------------------------------------------------------- extra networks

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetwork:
    """One ``<kind:name:arg:...>`` tag. ``args`` are the positional values after the name,
    ``named`` the ``key=value`` ones (``<lora:x:te=0.5:unet=1>``)."""

    kind: str
    name: str
    args: tuple[str, ...] = ()
    named: Mapping[str, str] = field(default_factory=dict)

    def _float(self, text: str, what: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise BadRequest(
                f"<{self.kind}:{self.name}:...>: {what} {text!r} is not a number; write e.g. "
                f"<{self.kind}:{self.name}:0.8>"
            ) from None

    @property
    def te_multiplier(self) -> float:
        """Text-encoder weight: first number (default 1.0), or ``te=``."""
        value = self._float(self.args[0], "weight") if self.args else 1.0
        return self._float(self.named["te"], "te") if "te" in self.named else value

    @property
    def unet_multiplier(self) -> float:
        """UNet weight: second number, ``unet=``, else the text-encoder weight."""
        value = self._float(self.args[1], "unet weight") if len(self.args) > 1 else self.te_multiplier
        return self._float(self.named["unet"], "unet") if "unet" in self.named else value


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove every ``<kind:name[:args...]>`` tag; return the rest of the prompt and the tags.

    Like A1111, any ``<word:...>`` tag is taken out (kinds ``lora``, ``lyco``, ``hypernet``
    and unknown ones alike: the caller decides what it can load) and the surrounding text,
    commas included, is left as it was.
    """
    found: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        name, *items = match[2].split(":")
        args: list[str] = []
        named: dict[str, str] = {}
        for item in items:
            parts = item.split("=")
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                args.append(item)
        found.append(ExtraNetwork(match[1], name, tuple(args), named))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


# ----------------------------------------------------------------------------- attention

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


# ----------------------------------------------------------------------------- scheduling


@dataclass(frozen=True)
class _Edit:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``."""

    before: list | None
    after: list
    when: str


@dataclass(frozen=True)
class _Alternate:
    options: list[list]


class _Unparseable(Exception):
    """The prompt is outside the editing grammar (e.g. a bare ``|``): A1111 uses it as is."""


_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")
_SPECIAL = "\\()[]:|"
_MAX_NESTING = 200


class _ScheduleParser:
    """Recursive descent over A1111's prompt-editing grammar.

    A prompt is text, escapes (``\\x``), and bracket constructs: ``(p)``, ``(p:p)``,
    ``[p]`` (kept verbatim), ``[p:p:N]``, ``[p:N]`` (edits) and ``[p|p|...]``
    (alternation). A construct that does not close properly is plain text at the top level
    and invalidates the construct around it when nested, as in A1111's grammar.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> list:
        nodes = self.sequence(0)
        if self.pos != len(self.text):  # pragma: no cover - sequence(0) consumes everything
            raise _Unparseable
        return nodes

    def sequence(self, depth: int) -> list:
        if depth > _MAX_NESTING:
            raise _Unparseable
        nodes: list = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt in ("", "\n"):
                    raise _Unparseable
                nodes.append(c + nxt)
                self.pos += 2
            elif c in "([":
                start = self.pos
                construct = self.construct(depth)
                if construct is not None:
                    nodes.extend(construct)
                    continue
                self.pos = start
                if depth:
                    return nodes
                nodes.append(c)
                self.pos += 1
            elif c in ")]:":
                if depth:
                    return nodes
                nodes.append(c)
                self.pos += 1
            elif c == "|":
                if depth:
                    return nodes
                raise _Unparseable
            else:
                end = self.pos
                while end < len(self.text) and self.text[end] not in _SPECIAL:
                    end += 1
                nodes.append(self.text[self.pos : end])
                self.pos = end
        return nodes

    def construct(self, depth: int) -> list | None:
        opener = self.text[self.pos]
        self.pos += 1
        first = self.sequence(depth + 1)
        if opener == "(":
            if self.peek() == ")":
                self.pos += 1
                return ["(", *first, ")"]
            if self.peek() == ":":
                self.pos += 1
                second = self.sequence(depth + 1)
                if self.peek() == ")":
                    self.pos += 1
                    return ["(", *first, ":", *second, ")"]
            return None
        if self.peek() == "]":
            self.pos += 1
            return ["[", *first, "]"]
        if self.peek() == "|":
            options = [first]
            while self.peek() == "|":
                self.pos += 1
                options.append(self.sequence(depth + 1))
            if self.peek() != "]":
                return None
            self.pos += 1
            return [_Alternate(options)]
        if self.peek() != ":":
            return None
        self.pos += 1
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return [_Edit(None, first, number[1])]
        second = self.sequence(depth + 1)
        if self.peek() != ":":
            return None
        number = _NUMBER.match(self.text, self.pos + 1)
        if number is None:
            return None
        self.pos = number.end()
        return [_Edit(first, second, number[1])]


@dataclass(frozen=True)
class _Timeline:
    steps: int
    int_offset: int
    float_offset: float
    old: bool

    def end_step(self, when: str) -> int:
        """The last step on which an edit's ``before`` part is used."""
        value = float(when)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.float_offset) * self.steps
        else:
            value -= self.int_offset
        return min(self.steps, int(value))


def _boundaries(nodes: list, timeline: _Timeline, found: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            end = timeline.end_step(node.when)
            if end >= 1:
                found.add(end)
            _boundaries(node.before or [], timeline, found)
            _boundaries(node.after, timeline, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, timeline.steps + 1))
            for option in node.options:
                _boundaries(option, timeline, found)


def _text_at(nodes: list, step: int, timeline: _Timeline) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            chosen = node.before if step <= timeline.end_step(node.when) else node.after
            out.append(_text_at(chosen or [], step, timeline))
        else:
            out.append(_text_at(node.options[(step - 1) % len(node.options)], step, timeline))
    return "".join(out)


def get_schedules(
    prompt: str, steps: int, *, hires_steps: int | None = None, old_timelines: bool = False
) -> list[tuple[int, str]]:
    """Resolve prompt editing and alternation: ``[(end_step, prompt), ...]`` in step order.

    Each prompt holds from the step after the previous entry's end up to its own end step
    (1-based, inclusive). ``[a:b:N]`` uses ``a`` up to step N and ``b`` after; ``[a:N]`` adds
    ``a`` after step N; ``[a::N]`` removes it. A number with a ``.`` is a fraction of the
    steps (``0.5`` of 10 -> 5), one without is a step number (A1111 1.6+; ``old_timelines``
    restores the earlier rule "below 1 is a fraction"). ``[a|b]`` switches every step. With
    ``hires_steps`` the schedule is for the hires pass, where A1111 counts fractions 1..2
    and step numbers after ``steps`` as that pass. Attention syntax is left in place.

    A prompt outside the grammar (a ``|`` outside brackets, a trailing backslash) is used
    unchanged for all steps, as A1111 does.
    """
    if steps < 1 or (hires_steps is not None and hires_steps < 1):
        raise BadRequest("steps must be at least 1")
    if hires_steps is None or old_timelines:
        timeline = _Timeline(hires_steps or steps, 0, 0.0, old_timelines)
    else:
        timeline = _Timeline(hires_steps, steps, 1.0, False)
    try:
        nodes = _ScheduleParser(prompt).parse()
    except _Unparseable:
        return [(timeline.steps, prompt)]
    ends = {timeline.steps}
    _boundaries(nodes, timeline, ends)
    return [(end, _text_at(nodes, end, timeline)) for end in sorted(ends)]


# ----------------------------------------------------------------------------- chunking

TokenItem = tuple[int, float] | tuple[str, float]
"""``(token_id, weight)``, or :data:`BREAK`."""


@dataclass
class PromptChunk:
    """Up to ``chunk_len`` tokens (75 for CLIP) and their weights, without BOS/EOS."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def padded(
        self, bos: int, eos: int, pad: int | None = None, chunk_len: int = 75
    ) -> tuple[list[int], list[float]]:
        """``[BOS] tokens [EOS] pad...``, ``chunk_len + 2`` long; BOS/EOS/pad weigh 1.0.

        ``pad`` defaults to ``eos`` (CLIP ViT-L); OpenCLIP encoders pad with their own id.
        """
        fill = chunk_len - len(self.tokens)
        ids = [bos, *self.tokens, eos, *[eos if pad is None else pad] * fill]
        return ids, [1.0, *self.weights, 1.0, *[1.0] * fill]


def weighted_tokens(
    pieces: Iterable[tuple[str, float]], tokenize: Callable[[str], Sequence[int]]
) -> list[TokenItem]:
    """Tokenize each ``(text, weight)`` piece on its own (as A1111 does) into token items.

    ``tokenize`` returns ids without BOS/EOS. :data:`BREAK` entries pass through.
    """
    items: list[TokenItem] = []
    for text, weight in pieces:
        if (text, weight) == BREAK:
            items.append(BREAK)
        else:
            items.extend((token, weight) for token in tokenize(text))
    return items


def split_chunks(
    items: Iterable[TokenItem],
    comma_token: int,
    chunk_len: int = 75,
    comma_backtrack: int = 20,
    keep_together: Mapping[int, int] | None = None,
) -> list[PromptChunk]:
    """Cut token items into chunks of at most ``chunk_len`` tokens, by A1111's rules.

    - :data:`BREAK` ends the current chunk (it is padded later).
    - When a chunk is full and the next token is not a comma, and the chunk's last comma is
      at most ``comma_backtrack`` tokens from its end, the tokens after that comma move to
      the next chunk, so a phrase is not cut in half (0 turns this off).
    - ``keep_together`` maps the first token of a multi-token unit (a multi-vector
      textual-inversion embedding) to its length; such a unit never straddles two chunks.
    - There is always at least one chunk (an empty prompt gives one empty chunk); a trailing
      empty chunk is not added after a final ``BREAK``.
    """
    chunks: list[PromptChunk] = []
    current = PromptChunk()
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current = PromptChunk()
        last_comma = -1

    for item in items:
        if item == BREAK:
            close()
            continue
        token, weight = item
        if token == comma_token:
            last_comma = len(current.tokens)
        elif (
            comma_backtrack
            and len(current.tokens) == chunk_len
            and last_comma != -1
            and len(current.tokens) - last_comma <= comma_backtrack
        ):
            cut = last_comma + 1
            moved = PromptChunk(current.tokens[cut:], current.weights[cut:])
            del current.tokens[cut:], current.weights[cut:]
            close()
            current = moved
        if len(current.tokens) == chunk_len:
            close()
        unit = (keep_together or {}).get(token, 1)
        if unit > 1 and len(current.tokens) + unit > chunk_len:
            close()
        current.tokens.append(token)
        current.weights.append(weight)

    if current.tokens or not chunks:
        close()
    return chunks


def prompt_chunks(
    prompt: str,
    tokenize: Callable[[str], Sequence[int]],
    comma_token: int,
    *,
    emphasis: bool = True,
    chunk_len: int = 75,
    comma_backtrack: int = 20,
    keep_together: Mapping[int, int] | None = None,
) -> list[PromptChunk]:
    """A plain (already scheduled) prompt -> its weighted 75-token chunks.

    ``emphasis=False`` is A1111's "Emphasis: None": the whole prompt is literal text at
    weight 1.0 (brackets and ``BREAK`` included).
    """
    pieces = parse_prompt_attention(prompt) if emphasis else [(prompt, 1.0)]
    return split_chunks(
        weighted_tokens(pieces, tokenize), comma_token, chunk_len, comma_backtrack, keep_together
    )
