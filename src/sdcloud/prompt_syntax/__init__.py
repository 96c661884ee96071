"""A1111 prompt syntax, written from its documented rules (not from A1111's code).

Independent steps, in the order the engine applies them:

1. :func:`extract_extra_networks` removes ``<lora:name:0.8>``-style tags from the prompt.
2. :func:`split_and` splits the positive prompt into composable-diffusion parts
   (``a cat AND a dog:0.5``); each part goes through the next steps on its own.
3. :func:`get_schedules` resolves prompt editing ``[a:b:when]`` and alternation ``[a|b]``
   into one plain prompt per range of sampling steps.
4. :func:`parse_prompt_attention` turns each plain prompt into ``(text, weight)`` pieces:
   ``(word)``, ``(word:1.3)``, ``[word]``, escapes and ``BREAK``.
5. :func:`weighted_tokens` + :func:`split_chunks` tokenize those pieces and cut them into
   75-token chunks the way A1111 does (``BREAK`` and comma backtracking); the engine encodes
   each chunk with BOS/EOS as 77 tokens and concatenates the results.

Pure Python; no torch, no tokenizer: the engine passes its tokenizer in as a callable.
"""

from __future__ import annotations

from sdcloud.prompt_syntax.attention import (
    BREAK,
    ROUND_MULTIPLIER,
    SQUARE_MULTIPLIER,
    parse_prompt_attention,
)
from sdcloud.prompt_syntax.chunks import PromptChunk, TokenItem, prompt_chunks, split_chunks, weighted_tokens
from sdcloud.prompt_syntax.composable import MAX_PARTS, is_plain, split_and
from sdcloud.prompt_syntax.editing import check_editing, get_schedules
from sdcloud.prompt_syntax.extra_networks import ExtraNetwork, extract_extra_networks

__all__ = [
    "BREAK",
    "MAX_PARTS",
    "ROUND_MULTIPLIER",
    "SQUARE_MULTIPLIER",
    "ExtraNetwork",
    "PromptChunk",
    "TokenItem",
    "check_editing",
    "extract_extra_networks",
    "get_schedules",
    "is_plain",
    "parse_prompt_attention",
    "prompt_chunks",
    "split_and",
    "split_chunks",
    "weighted_tokens",
]
