"""A1111 token chunking: weighted tokens cut into 75-token chunks (``BREAK``, comma backtracking)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sdcloud.prompt_syntax.attention import BREAK, parse_prompt_attention

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
