"""A1111's token counter for a prompt box: ``12/75``, or ``80/150`` once the prompt needs a
second 75-token chunk. Counted with the CLIP tokenizer shipped in the package (offline), after
``<lora:...>`` tags are taken out, with A1111's chunking (``BREAK``, comma backtracking) and,
for prompt editing and ``AND`` parts, the scheduled prompt or part with the most tokens."""

from __future__ import annotations

import functools
from typing import Any

CHUNK = 75


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    from sdcloud.engine.model_configs import TOKENIZER_DIR

    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    tok.model_max_length = 10**9  # counting long prompts is the point: no "longer than 77" warning
    return tok


def warm_up() -> None:
    _tokenizer()


def count_tokens(prompt: str) -> tuple[int, int]:
    """(tokens used, tokens available) for ``prompt``, as A1111's counter shows them."""
    from sdcloud.prompt_syntax import extract_extra_networks, get_schedules, prompt_chunks, split_and

    tok = _tokenizer()
    text, _ = extract_extra_networks(prompt or "")

    def tokenize(t: str) -> list[int]:
        return tok(t, add_special_tokens=False, truncation=False)["input_ids"]

    comma = tokenize(",")[0]
    best = (0, CHUNK)
    # prompt editing and AND: A1111 counts the scheduled prompt (of any part) with the most tokens
    for part, _weight in split_and(text):
        for _, scheduled in get_schedules(part, 100):
            chunks = prompt_chunks(scheduled, tokenize, comma)
            used = sum(len(c.tokens) for c in chunks)
            best = max(best, (used, max(1, len(chunks)) * CHUNK))
    return best


def counter_text(prompt: str) -> str:
    used, available = count_tokens(prompt)
    return f"{used}/{available}"
