"""Tiny random BLIP and CLIP models saved as transformers folders, as a user puts
Salesforce/blip-image-captioning-large in models/BLIP and openai/clip-vit-large-patch14 in
models/CLIP (no weights can be downloaded here). CLIP uses the real CLIP tokenizer sdcloud
ships for the demo model; BLIP a small BERT word-piece vocabulary with BLIP's [DEC] token."""

from __future__ import annotations

import shutil
from pathlib import Path

WORDS = ["a", "picture", "of", "cat", "dog", "red", "blue", "house", "tree", "sky", "on", "the", "with", "and",
         "green", "field", "small", "big", "car", "road"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def write_blip(folder: Path, seed: int = 0) -> None:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]", additional_special_tokens=["[DEC]"])
    dec = vocab.index("[DEC]")
    cfg = BlipConfig(text_config=dict(vocab_size=len(vocab), **SMALL, encoder_hidden_size=32, bos_token_id=dec,
                                      sep_token_id=3, pad_token_id=0, eos_token_id=3),
                     vision_config=dict(**SMALL, image_size=64, patch_size=16), projection_dim=16)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))


def write_clip(folder: Path, seed: int = 0) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from sdcloud.engine.demo import TOKENIZER_DIR

    folder.mkdir(parents=True, exist_ok=True)
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, **SMALL, max_position_embeddings=77),
                     vision_config=dict(**SMALL, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(cfg).eval().save_pretrained(str(folder))
    for f in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / f, folder / f)


def write_clip_interrogator(models_root: Path) -> None:
    """BLIP, CLIP and three of A1111's category lists (short ones)."""
    write_blip(models_root / "BLIP" / "blip-tiny")
    write_clip(models_root / "CLIP" / "clip-tiny")
    lists = models_root / "interrogate"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "mediums.txt").write_text("an oil painting\na photograph\na pencil sketch\na 3d render\n")
    (lists / "artists.txt").write_text("by Claude Monet\nby Hokusai\nby Studio Ghibli\n")
    (lists / "flavors.top3.txt").write_text("\n".join(["highly detailed", "soft light", "trending on artstation",
                                                        "8k", "bokeh", "pastel colors"]) + "\n")
