"""A1111 extra-network tags: ``<lora:name:0.8>`` and friends, removed from the prompt."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sdcloud.errors import BadRequest

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
            value = float(text)
            if not math.isfinite(value):  # 1e400: an infinite weight turns the image into NaN
                raise ValueError(text)
            return value
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


def mentions(text: str, word: str) -> bool:
    """True when ``word`` (an embedding's file name) appears in ``text`` as a whole word, the way
    A1111 finds the embeddings a prompt uses."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None
