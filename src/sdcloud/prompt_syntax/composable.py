"""A1111's composable diffusion (``AND``): ``a cat AND a dog:0.5`` is two prompts, each
encoded on its own; at every step the model's outputs for them are combined with their
weights (``uncond + cfg * sum(weight * (cond_k - uncond))``, see ``engine.sampling_loop``).

Written from A1111's documented behaviour (``prompt_parser.get_multicond_prompt_list``): the
prompt is split on the whole word ``AND`` (upper case only); each part may end with
``:weight`` (a number, default 1). This holds for a prompt without ``AND`` too, so
``landscape:1.2`` is the prompt ``landscape`` at weight 1.2, as in A1111. Only the positive
prompt (and the hires prompt) is split; the negative prompt is one prompt.
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")

MAX_PARTS = 16
"""The most ``AND`` parts one prompt may have: each part is one more UNet batch row per step."""


def split_and(prompt: str) -> list[tuple[str, float]]:
    """``[(text, weight), ...]`` of the ``AND`` parts of ``prompt`` (one part without ``AND``)."""
    parts: list[tuple[str, float]] = []
    for sub in _AND.split(prompt):
        m = _WEIGHT.search(sub)
        if m is None:  # pragma: no cover - the pattern matches any text
            parts.append((sub, 1.0))
            continue
        parts.append((m.group(1), float(m.group(2)) if m.group(2) is not None else 1.0))
    return parts


def is_plain(parts: list[tuple[str, float]]) -> bool:
    """One part at weight 1: the ordinary classifier-free guidance."""
    return len(parts) == 1 and parts[0][1] == 1.0
