"""A1111 prompt editing ``[a:b:when]`` and alternation ``[a|b]``: one plain prompt per range of steps."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdcloud.errors import BadRequest


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

    def __init__(self, text: str, what: str = "prompt") -> None:
        self.text = text
        self.what = what
        self.pos = 0

    def when(self, number: re.Match[str]) -> str:
        """An edit's step number, refused when it is too large for a float (``1e400`` is
        infinity, and A1111 fails on it with an OverflowError)."""
        if not math.isfinite(float(number[1])):
            raise BadRequest(f"{self.what}: prompt editing step '{number[1]}' is out of range; write a step "
                             "number (e.g. [a:b:10]) or a fraction of the steps (e.g. [a:b:0.5])")
        return number[1]

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
            return [_Edit(None, first, self.when(number))]
        second = self.sequence(depth + 1)
        if self.peek() != ":":
            return None
        number = _NUMBER.match(self.text, self.pos + 1)
        if number is None:
            return None
        self.pos = number.end()
        return [_Edit(first, second, self.when(number))]


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


def check_editing(prompt: str, what: str = "prompt") -> None:
    """400 for a prompt-editing step no schedule can use (``[a:b:1e400]``), before any work."""
    try:
        _ScheduleParser(prompt, what).parse()
    except _Unparseable:
        pass


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
