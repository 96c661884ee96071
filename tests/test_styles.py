"""``styles.csv`` in A1111's format: saved, replaced, deleted, read by ``/sdapi/v1/prompt-styles``
and applied by the ``styles`` request field (``{prompt}`` placeholder or appended)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcloud.api.styles import apply_styles, delete_style, read_styles, save_style
from sdcloud.errors import BadRequest, NotFound


def test_save_replace_delete_keep_a1111_format(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\nold,"masterpiece, {prompt}",\n', encoding="utf-8")
    save_style(path, "夕焼け", "{prompt}, sunset, 逆光", "lowres, blurry")
    save_style(path, "old", "best quality", "")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "name,prompt,negative_prompt"
    assert '"{prompt}, sunset, 逆光"' in text  # commas quoted as csv does, UTF-8 kept
    styles = read_styles(path)
    assert [s["name"] for s in styles] == ["old", "夕焼け"] and styles[0]["prompt"] == "best quality"
    delete_style(path, "old")
    assert [s["name"] for s in read_styles(path)] == ["夕焼け"]
    with pytest.raises(NotFound):
        delete_style(path, "old")
    with pytest.raises(BadRequest):
        save_style(path, "  ", "x", "")
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]  # no temp file left behind


def test_apply_styles_like_a1111() -> None:
    styles = [{"name": "a", "prompt": "{prompt}, sharp", "negative_prompt": "blur"},
              {"name": "b", "prompt": "film grain", "negative_prompt": ""}]
    assert apply_styles(styles, ["a", "b", "missing"], "cat", "ugly") == ("cat, sharp, film grain", "ugly, blur")
    assert apply_styles(styles, ["b"], "", "") == ("film grain", "")
