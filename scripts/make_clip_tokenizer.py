"""Regenerate the CLIP BPE tokenizer files shipped in src/sdcloud/engine/configs/tokenizer/.

Source: ``open_clip/bpe_simple_vocab_16e6.txt.gz`` from the PyPI wheel open_clip_torch
(MIT licence), which is OpenAI CLIP's BPE merge list (MIT licence). The vocabulary is
derived exactly as CLIP's SimpleTokenizer builds it: the 256 byte symbols, the same with
``</w>``, the 48,894 merges, then ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 tokens),
which is the vocab.json/merges.txt layout of the Hugging Face CLIP tokenizers.

Usage: pip download --no-deps open_clip_torch && python scripts/make_clip_tokenizer.py <wheel>
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/sdcloud/engine/configs/tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    merges = [tuple(line.split()) for line in text.split("\n")[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    print(f"wrote {len(vocab)} tokens, {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
