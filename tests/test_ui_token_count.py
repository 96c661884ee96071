"""The prompt boxes' token counter counts as A1111's does (shipped CLIP tokenizer, offline)."""

from __future__ import annotations

from sdcloud.ui.token_count import count_tokens, counter_text


def test_counts_tokens_and_chunks_like_a1111() -> None:
    assert count_tokens("") == (0, 75)
    assert count_tokens("a cat") == (2, 75)
    assert count_tokens("a cat <lora:detail:0.8>") == (2, 75)  # extra-network tags are not text
    assert count_tokens("(a cat:1.3)") == (2, 75)  # attention brackets are not tokens
    long = ", ".join(["red fox"] * 40)  # 119 tokens: a second chunk
    assert count_tokens(long) == (119, 150)
    assert count_tokens("a BREAK b") == (2, 150)  # BREAK starts a new chunk
    assert count_tokens("[a cat:a very big dog with a hat:10]")[0] == 7  # the longer of the two prompts
    assert counter_text("a cat") == "2/75"
