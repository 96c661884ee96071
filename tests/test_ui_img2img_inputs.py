"""img2img's sub-tabs as pure functions: what each editor value becomes (init image and mask),
Resize by, the image "Send to" takes, and the Batch folder rules (PIL/numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdcloud.api.img2img_batch import confine, list_images, mask_for, output_names, scaled_size
from sdcloud.errors import BadRequest
from sdcloud.settings import Settings
from sdcloud.ui.img2img import batch_html
from sdcloud.ui.inpaint_mask import (
    changed_mask,
    inpaint_inputs,
    inpaint_sketch_inputs,
    resize_preview,
    sketched_image,
    upload_mask,
)
from sdcloud.ui.params import image_to_send

BLUE = (30, 120, 200)


def _editor(stroke_color: tuple[int, int, int, int] | None, box: tuple[int, int, int, int] = (20, 20, 43, 43)
            ) -> dict[str, object]:
    """An ``gr.ImageEditor`` value as Gradio hands it over: background, one layer, composite."""
    background = Image.new("RGB", (64, 64), BLUE)
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    if stroke_color is not None:
        ImageDraw.Draw(layer).rectangle(box, fill=stroke_color)
    composite = background.convert("RGBA")
    composite.alpha_composite(layer)
    return {"background": background, "layers": [layer], "composite": composite}


def test_sketch_keeps_the_drawn_colours_and_has_no_mask() -> None:
    image = sketched_image(_editor((255, 0, 0, 255)))
    assert image is not None and image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((30, 30)) == (255, 0, 0)  # the stroke
    assert image.getpixel((2, 2)) == BLUE  # the picture under it
    # without Gradio's composite the layers are pasted over the background
    value = _editor((0, 255, 0, 255))
    value["composite"] = None
    assert sketched_image(value).getpixel((30, 30)) == (0, 255, 0)  # type: ignore[union-attr]
    assert sketched_image({"background": None, "layers": [], "composite": None}) is None


def test_inpaint_sketch_mask_is_the_changed_pixels_and_the_colour_goes_in() -> None:
    image, mask = inpaint_sketch_inputs(_editor((255, 0, 0, 255)), mask_alpha=0, mask_blur=0)
    assert image is not None and mask is not None
    m = np.asarray(mask)
    assert m[30, 30] == 255 and m[2, 2] == 0
    assert int((m > 0).sum()) == 24 * 24  # exactly the stroke
    assert image.getpixel((30, 30)) == (255, 0, 0) and image.getpixel((2, 2)) == BLUE


def test_inpaint_sketch_mask_transparency_dims_the_mask() -> None:
    _, full = inpaint_sketch_inputs(_editor((255, 0, 0, 255)), mask_alpha=0, mask_blur=0)
    _, dimmed = inpaint_sketch_inputs(_editor((255, 0, 0, 255)), mask_alpha=60, mask_blur=0)
    assert full.getpixel((30, 30)) == 255  # type: ignore[union-attr]
    assert dimmed.getpixel((30, 30)) == pytest.approx(102, abs=1)  # type: ignore[union-attr]  # 255 * 0.4


def test_inpaint_sketch_blur_softens_the_colour_edge() -> None:
    image, _ = inpaint_sketch_inputs(_editor((255, 0, 0, 255)), mask_alpha=0, mask_blur=4)
    edge = image.getpixel((19, 31))  # type: ignore[union-attr]  # just outside the stroke
    assert edge != BLUE and edge != (255, 0, 0)  # between the two


def test_inpaint_sketch_stroke_in_the_picture_colour_still_counts() -> None:
    """A stroke the colour of the picture changes no pixel; the layer still marks it."""
    _, mask = inpaint_sketch_inputs(_editor((*BLUE, 255)), mask_blur=0)
    assert mask is not None and mask.getpixel((30, 30)) == 255


def test_inpaint_sketch_without_strokes_or_picture() -> None:
    image, mask = inpaint_sketch_inputs(_editor(None))
    assert image is not None and mask is None
    assert inpaint_sketch_inputs(None) == (None, None)


def test_changed_mask() -> None:
    a = Image.new("RGB", (8, 8), (10, 10, 10))
    b = a.copy()
    b.putpixel((3, 4), (10, 11, 10))
    m = np.asarray(changed_mask(a, b))
    assert m[4, 3] == 255 and int((m > 0).sum()) == 1


def test_inpaint_uses_strokes_whatever_their_colour() -> None:
    image, mask = inpaint_inputs(_editor((255, 255, 255, 255)))
    assert image is not None and image.getpixel((30, 30)) == BLUE  # the picture, not the paint
    assert mask is not None and mask.getpixel((30, 30)) == 255 and mask.getpixel((2, 2)) == 0


def test_uploaded_mask_black_and_white_or_cut_out() -> None:
    bw = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(bw).rectangle((0, 0, 15, 31), fill="white")
    m = upload_mask(bw, (64, 64))
    assert m.mode == "L" and m.size == (64, 64) and m.getpixel((5, 5)) == 255 and m.getpixel((60, 5)) == 0
    cut = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # a transparent PNG with a white blob
    ImageDraw.Draw(cut).rectangle((16, 0, 31, 31), fill=(255, 255, 255, 255))
    m = upload_mask(cut, (32, 32))
    assert m.getpixel((20, 5)) == 255 and m.getpixel((5, 5)) == 0


def test_resize_by() -> None:
    assert scaled_size((512, 512), 1.5) == (768, 768)
    assert scaled_size((500, 333), 1.0) == (496, 328)  # A1111 rounds down to a multiple of 8
    assert resize_preview((512, 384), 2) == "Resize: from 512x384 to 1024x768"
    assert resize_preview(None, 2) == "No image selected"


def test_send_to_takes_the_selected_image_never_the_grid() -> None:
    result = {"paths": ["grid.png", "a.png", "b.png"], "info": {"index_of_first_image": 1}}
    assert image_to_send(result, 2) == "b.png"
    assert image_to_send(result, 1) == "a.png"
    assert image_to_send(result, 0) == "a.png"  # the grid: its first image instead
    assert image_to_send(result, None) == "a.png"
    assert image_to_send({"paths": ["only.png"], "info": {}}, 0) == "only.png"
    assert image_to_send(None, 0) is None


def test_batch_folders_are_confined(tmp_path: Path) -> None:
    data, allowed, outside = tmp_path / "data", tmp_path / "shared", tmp_path / "elsewhere"
    for folder in (data / "in", allowed, outside, data / ".sdcloud"):
        folder.mkdir(parents=True)
    settings = Settings(data_dir=data, batch_dirs=(allowed,))
    assert confine("in", settings, "Input directory", must_exist=True) == (data / "in").resolve()
    assert confine(str(allowed), settings, "Input directory", must_exist=True) == allowed.resolve()
    assert confine("out/new", settings, "Output directory", must_exist=False) == (data / "out/new").resolve()
    with pytest.raises(BadRequest, match="outside the folders batch may use"):
        confine(str(outside), settings, "Input directory", must_exist=True)
    with pytest.raises(BadRequest, match="outside"):
        confine("../elsewhere", settings, "Input directory", must_exist=True)
    (data / "link").symlink_to(outside)
    with pytest.raises(BadRequest, match="outside"):  # a symlink does not lead out
        confine("link", settings, "Input directory", must_exist=True)
    with pytest.raises(BadRequest, match="state folder"):
        confine(".sdcloud", settings, "Output directory", must_exist=False)
    with pytest.raises(BadRequest, match="not a folder"):
        confine("missing", settings, "Input directory", must_exist=True)
    with pytest.raises(BadRequest, match="give a folder"):
        confine("  ", settings, "Input directory", must_exist=True)
    for hostile in ("in\x00put", "x" * 5000, "/" + "a/" * 3000):
        with pytest.raises(BadRequest) as err:
            confine(hostile, settings, "Input directory", must_exist=True)
        assert str(tmp_path) not in str(err.value)  # no server path in a message to a client


def test_batch_files_masks_and_output_names(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    images = list_images(tmp_path)
    assert [p.name for p in images] == ["a.JPG", "b.png", "c.webp"]
    masks = [tmp_path / "m" / "a.png", tmp_path / "m" / "b.jpg"]
    assert mask_for(images[0], masks) == masks[0]
    assert mask_for(images[1], masks) == masks[1]
    assert mask_for(images[2], masks) is None  # no c.*: skipped, as A1111 does
    assert mask_for(images[2], masks[:1]) == masks[0]  # one mask serves every image
    assert output_names("cat", 1, ".png") == ["cat.png"]
    assert output_names("cat", 3, ".png") == ["cat.png", "cat-1.png", "cat-2.png"]


def test_batch_progress_bar() -> None:
    view = {"state": "running", "total": 4, "finished": 1, "step": 2, "steps": 4, "written": ["a.png"],
            "errors": [], "output_dir": "/d/out"}
    html = batch_html(view)
    assert "Image 2/4 · Step 2/4" in html and 'aria-valuenow="38"' in html
    assert "Done: 4 images written to /d/out" in batch_html({**view, "state": "done", "finished": 4,
                                                            "written": ["a", "b", "c", "d"]})
    assert "Interrupted after 1/4 images" in batch_html({**view, "state": "cancelled"})


def test_allowed_batch_folders_from_env_and_flags(tmp_path: Path) -> None:
    env = {"SDCLOUD_BATCH_DIRS": f"{tmp_path / 'a'}:{tmp_path / 'b'}"}
    assert Settings.load({"data_dir": tmp_path}, env=env).batch_dirs == (tmp_path / "a", tmp_path / "b")
    flags = Settings.load({"data_dir": tmp_path, "batch_dirs": [str(tmp_path / "c")]}, env={})
    assert flags.batch_dirs == (tmp_path / "c",)
