"""Infotext parsing: our linear scanner against A1111's own regex, on a real infotext and on
hostile colon-free text of growing length. Prints seconds and the ratio (A1111 / ours).

    PYTHONPATH=src python bench/infotext_parse.py
"""

from __future__ import annotations

import re
import time

from sdcloud.infotext import _params

A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
REAL = (
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, Clip skip: 2, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.4, Hires upscale: 1.5, "
    'Hires upscaler: 4x-UltraSharp, Lora hashes: "detail_tweaker: e3f9c2b1a8d7", Version: v1.10.1'
)


def timed(fn, text: str, repeat: int) -> float:  # noqa: ANN001
    started = time.perf_counter()
    for _ in range(repeat):
        fn(text)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    assert _params(REAL) == A1111_PARAM.findall(REAL)
    rows = [("real A1111 line", REAL, 2000)] + [(f"{n // 1024} KB without ':'", "a" * n, 1)
                                                 for n in (4096, 8192, 16384)]
    print(f"{'input':<22}{'A1111 regex s':>15}{'scanner s':>12}{'ratio':>10}")
    for name, text, repeat in rows:
        theirs, ours = timed(A1111_PARAM.findall, text, repeat), timed(_params, text, repeat)
        print(f"{name:<22}{theirs:>15.6f}{ours:>12.6f}{theirs / ours:>10.1f}")
    big = "a" * (1 << 20)
    print(f"scanner on 1 MB without ':': {timed(_params, big, 1):.3f} s (A1111's regex: minutes)")


if __name__ == "__main__":
    main()
