"""A1111's selectable scripts (the Script dropdown; ``script_name``/``script_args`` in the API):
X/Y/Z plot, Prompt matrix, Prompts from file or textbox, SD upscale.

``find`` matches a title case-insensitively, as A1111 does; ``listing`` and ``script_info``
answer ``/sdapi/v1/scripts`` and ``/sdapi/v1/script-info``.
"""

from __future__ import annotations

from typing import Any

from sdcloud.scripts.base import Script, ScriptEnv
from sdcloud.scripts.prompt_matrix import PromptMatrix
from sdcloud.scripts.prompts_from_file import PromptsFromFile
from sdcloud.scripts.sd_upscale import SDUpscale
from sdcloud.scripts.xyz_grid import XYZPlot

SCRIPTS: tuple[Script, ...] = (PromptMatrix(), PromptsFromFile(), XYZPlot(), SDUpscale())


def for_tab(is_img2img: bool) -> list[Script]:
    return [s for s in SCRIPTS if (s.img2img if is_img2img else s.txt2img)]


def find(name: str, is_img2img: bool) -> Script | None:
    """The script titled ``name`` (any case) on that tab, else None."""
    wanted = name.strip().lower()
    return next((s for s in for_tab(is_img2img) if s.title.lower() == wanted), None)


def listing() -> dict[str, list[str]]:
    """``/sdapi/v1/scripts``: lower-case titles per tab."""
    return {"txt2img": [s.title.lower() for s in for_tab(False)],
            "img2img": [s.title.lower() for s in for_tab(True)]}


def script_info(env: ScriptEnv | None = None) -> list[dict[str, Any]]:
    """``/sdapi/v1/script-info``: one entry per script and tab, with its positional args."""
    out = []
    for is_img2img in (False, True):
        for s in for_tab(is_img2img):
            out.append({"name": s.title.lower(), "is_alwayson": False, "is_img2img": is_img2img,
                        "args": [a.info() for a in s.args(is_img2img, env)]})
    return out


__all__ = ["SCRIPTS", "Script", "ScriptEnv", "find", "for_tab", "listing", "script_info"]
