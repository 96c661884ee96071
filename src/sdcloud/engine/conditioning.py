"""Prompt → text-encoder conditioning with A1111 semantics.

Attention weights ``(word:1.3)``/``[word]`` scale each token's embedding and the chunk mean
is restored afterwards; prompts longer than 75 tokens are split into 75-token chunks (each
wrapped in BOS/EOS to 77) and concatenated; ``BREAK`` starts a new chunk; clip skip takes an
earlier hidden layer (SD1: then the final layer norm; SDXL: counted from the penultimate
layer that SDXL always uses). Parsing lives in ``sdcloud.prompt_syntax``; this module does the math.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdcloud import prompt_syntax

CHUNK = 75


@dataclass
class Conditioning:
    """Embeddings for one prompt: ``embeds`` [1, 77*k, D]; ``pooled`` [1, P] for SDXL."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None


def _text_model(encoder: Any) -> Any:
    # transformers >= 5.6 flattened CLIPTextModel (no ``.text_model``); handle both layouts.
    return getattr(encoder, "text_model", encoder)


class PromptEncoder:
    """Encodes prompts for one loaded pipeline (SD1/SD2: one encoder; SDXL: two)."""

    def __init__(self, pipe: Any, family: str) -> None:
        self.pipe = pipe
        self.family = family
        self.encoders = [(pipe.tokenizer, pipe.text_encoder)] if getattr(pipe, "text_encoder", None) else []
        if getattr(pipe, "text_encoder_2", None) is not None:
            self.encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
        self._cache: dict[tuple[str, int], Conditioning] = {}

    def clear_cache(self) -> None:
        self._cache.clear()

    def __call__(self, prompt: str, clip_skip: int = 1) -> Conditioning:
        key = (prompt, clip_skip)
        if key not in self._cache:
            self._cache[key] = self._encode(prompt, clip_skip)
        return self._cache[key]

    # -- tokenisation ------------------------------------------------------------------
    def _chunks(self, tokenizer: Any, prompt: str) -> list[prompt_syntax.PromptChunk]:
        maybe_convert = getattr(self.pipe, "maybe_convert_prompt", None)

        def tokenize(text: str) -> list[int]:
            if maybe_convert is not None:
                text = maybe_convert(text, tokenizer)  # textual-inversion multi-vector tokens
            return tokenizer(text, add_special_tokens=False, truncation=False).input_ids

        comma = tokenizer.convert_tokens_to_ids(",</w>")
        return prompt_syntax.prompt_chunks(prompt, tokenize, comma, chunk_len=CHUNK)

    def _encode_one(self, tokenizer: Any, encoder: Any, chunks: list[prompt_syntax.PromptChunk],
                    clip_skip: int, want_pooled: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = encoder.device
        outs: list[torch.Tensor] = []
        pooled = None
        for chunk in chunks:
            ids, weights = chunk.padded(tokenizer.bos_token_id, tokenizer.eos_token_id,
                                        tokenizer.pad_token_id, CHUNK)
            w = torch.tensor(weights, device=device)
            input_ids = torch.tensor([ids], device=device)
            out = encoder(input_ids, output_hidden_states=True)
            if self.family in ("sdxl", "sdxl_refiner"):
                z = out.hidden_states[-(clip_skip + 1)]
            elif clip_skip > 1:
                z = _text_model(encoder).final_layer_norm(out.hidden_states[-clip_skip])
            else:
                z = out.last_hidden_state
            if want_pooled and pooled is None:
                pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
            original_mean = z.mean()
            z = z * w.to(z.dtype).reshape(1, -1, 1)
            new_mean = z.mean()
            if new_mean.abs() > 0:
                z = z * (original_mean / new_mean)
            outs.append(z)
        return torch.cat(outs, dim=1), pooled

    @torch.no_grad()
    def _encode(self, prompt: str, clip_skip: int) -> Conditioning:
        embeds: list[torch.Tensor] = []
        pooled = None
        chunk_lists = [self._chunks(tok, prompt) for tok, _ in self.encoders]
        n = max(len(c) for c in chunk_lists)
        for idx, ((tok, enc), chunks) in enumerate(zip(self.encoders, chunk_lists, strict=True)):
            chunks = chunks + [prompt_syntax.PromptChunk() for _ in range(n - len(chunks))]
            want_pooled = self.family in ("sdxl", "sdxl_refiner") and idx == len(self.encoders) - 1
            z, p = self._encode_one(tok, enc, chunks, clip_skip, want_pooled)
            embeds.append(z)
            if want_pooled:
                pooled = p
        return Conditioning(torch.cat(embeds, dim=-1), pooled)


def pad_all(conds: list[Conditioning], empty: Conditioning) -> list[Conditioning]:
    """Make prompts the same token length by appending empty chunks (A1111 pads the positive
    and negative prompts, and each ``AND`` part, to the longest)."""

    def grow(c: Conditioning, length: int) -> Conditioning:
        missing = (length - c.embeds.shape[1]) // empty.embeds.shape[1]
        if missing <= 0:
            return c
        return Conditioning(torch.cat([c.embeds] + [empty.embeds] * missing, dim=1), c.pooled)

    length = max(c.embeds.shape[1] for c in conds)
    return [grow(c, length) for c in conds]

