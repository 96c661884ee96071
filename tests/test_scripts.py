"""A1111's selectable scripts over the API (in-process app, demo model, 64x64, 1-2 steps):
X/Y/Z plot cell by cell against single generations, prompt matrix, prompts from file or
textbox, SD upscale, and the 422/400 answers A1111 clients get for bad script requests."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdcloud.api.app import create_app
from sdcloud.settings import Settings

BASE = {"prompt": "a red fox", "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 1,
        "sampler_name": "Euler", "seed": 1234, "cfg_scale": 7}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("scripts"), "model": "demo"}, env={})
    (settings.data_dir / "styles.csv").write_text("name,prompt,negative_prompt\nsharp,\"{prompt}, sharp\",blur\n")
    with TestClient(create_app(settings, ui=False)) as c:
        yield c, settings


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def txt2img(c: TestClient, **fields: Any) -> dict[str, Any]:
    r = c.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert r.status_code == 200, r.text
    return r.json()


def xyz_args(x_type: Any, x_values: str, y_type: Any = 0, y_values: str = "", z_type: Any = 0,
             z_values: str = "", legend: bool = True, lone: bool = True) -> list[Any]:
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, [], legend, lone, False,
            False, False, False, False, 0, False]


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_scripts_are_listed_as_a1111_lists_them(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    assert c.get("/sdapi/v1/scripts").json() == {
        "txt2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot"],
        "img2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot", "sd upscale"],
    }
    info = c.get("/sdapi/v1/script-info").json()
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert len(xyz["args"]) == 18 and xyz["is_alwayson"] is False
    assert xyz["args"][0]["label"] == "X type" and xyz["args"][0]["choices"][:5] == [
        "Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]
    up = next(s for s in info if s["name"] == "sd upscale")
    assert up["is_img2img"] and [a["label"] for a in up["args"]] == ["info", "Tile overlap", "Upscaler", "Scale Factor"]
    assert "Lanczos" in up["args"][2]["choices"]


def test_xyz_cells_equal_single_generations(app: tuple[TestClient, Settings]) -> None:
    """Steps x Seed x CFG (A1111 axis indices 4, 1, 6): every cell is the image a plain
    txt2img with those values makes, and the grid is those cells side by side."""
    c, _ = app
    out = txt2img(c, script_name="X/Y/Z plot",
                  script_args=xyz_args(4, "1, 2", 1, "5,6", 6, "3, 9", legend=False))
    info = json.loads(out["info"])
    images = [decode(b) for b in out["images"]]
    assert len(images) == 1 + 8 and info["index_of_first_image"] == 1
    grid = images[0]
    assert grid.size == (2 * 64 * 2, 2 * 64)  # two 2x2 sub-grids side by side (Z)
    for iz, cfg in enumerate((3, 9)):
        for iy, seed in enumerate((5, 6)):
            for ix, steps in enumerate((1, 2)):
                single = txt2img(c, steps=steps, seed=seed, cfg_scale=cfg)
                cell = images[1 + ix + 2 * iy + 4 * iz]
                assert same(cell, decode(single["images"][0])), (steps, seed, cfg)
                assert info["infotexts"][1 + ix + 2 * iy + 4 * iz] == json.loads(single["info"])["infotexts"][0]
                box = (iz * 128 + ix * 64, iy * 64, iz * 128 + ix * 64 + 64, iy * 64 + 64)
                assert same(grid.crop(box), cell)
    grid_text = info["infotexts"][0]
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: \"1, 2\", Y Type: Seed" in grid_text
    assert "Z Type: CFG Scale" in grid_text and "Fixed Y Values: \"5, 6\"" in grid_text


def test_xyz_labels_sampler_checkpoint_and_prompt_sr(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    out = txt2img(c, script_name="x/y/z plot", script_args=[
        "Sampler", "", ["Euler", "DDIM"], "Prompt S/R", "fox, cat", [], "Checkpoint name", "demo", [],
        True, True, False, False, False, False, False, 4, False])
    images = [decode(b) for b in out["images"]]
    grid, cells = images[0], images[1:]
    assert len(cells) == 4
    assert grid.width > 2 * 64 + 4 and grid.height > 2 * 64 + 4  # labels and margins around the cells
    cat = txt2img(c, prompt="a red cat", sampler_name="DDIM")
    assert same(cells[3], decode(cat["images"][0]))
    texts = json.loads(out["info"])["infotexts"]
    assert "a red cat" in texts[4] and "Sampler: DDIM" in texts[4]
    # a labelled grid is not plain black/white: the cells are pasted in it
    assert np.asarray(grid).std() > 10


def test_xyz_clip_skip_denoising_and_hires_axes(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    out = txt2img(c, enable_hr=True, hr_scale=1.5, denoising_strength=0.5, script_name="X/Y/Z plot",
                  script_args=xyz_args("Clip skip", "1,2", "Hires steps", "1", "Denoising", "0.3"))
    texts = json.loads(out["info"])["infotexts"][1:]
    assert "Clip skip: 2" not in texts[0] and "Clip skip: 2" in texts[1]
    assert all("Denoising strength: 0.3" in t and "Hires steps: 1" in t for t in texts)
    assert decode(out["images"][1]).size == (96, 96)


def test_xyz_saves_grid_and_cells_in_a1111_folders(app: tuple[TestClient, Settings]) -> None:
    c, settings = app
    txt2img(c, save_images=True, script_name="X/Y/Z plot", script_args=xyz_args(4, "1,2", lone=False))
    grids = list((settings.outputs_path / "txt2img-grids").rglob("xyz_grid-*.png"))
    assert len(grids) == 1
    assert "X Type: Steps" in Image.open(grids[0]).info["parameters"]
    samples = list((settings.outputs_path / "txt2img-images").rglob("*.png"))
    assert len(samples) >= 2


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"script_name": "x/y plot"}, 422, "Script 'x/y plot' not found"),
    ({"script_name": "SD upscale"}, 422, "not found"),  # img2img only
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, 422, "always on script ADetailer not found"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args(99, "1")}, 400, "not an X/Y/Z axis"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args("Token merging ratio", "0.5")}, 400, "not supported"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args("Sampler", "Nope")}, 400, "unknown sampler"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args("Checkpoint name", "nope")}, 400, "Unknown checkpoint"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args("Prompt S/R", "dog,cat")}, 400, "did not find dog"),
    ({"script_name": "X/Y/Z plot", "script_args": xyz_args(4, "1-1000")}, 400, "at most"),
    ({"script_name": "X/Y/Z plot", "script_args": [0] * 30}, 400, "takes 18"),
    ({"script_name": "Prompt matrix", "script_args": []}, 400, "'|'"),
    ({"script_name": "Prompts from file or textbox", "script_args": [False, False, "start", ""]}, 400, "empty"),
    ({"script_name": "Prompts from file or textbox",
      "script_args": [False, False, "start", "--steps abc"]}, 400, "--steps"),
])
def test_bad_script_requests_are_refused_before_queueing(app: tuple[TestClient, Settings], body: dict[str, Any],
                                                         status: int, words: str) -> None:
    c, _ = app
    r = c.post("/sdapi/v1/txt2img", json={**BASE, **body})
    assert r.status_code == status, r.text
    assert words in r.text


def test_prompt_matrix_grid_and_images(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    out = txt2img(c, prompt="a fox|in snow|at night", script_name="Prompt matrix",
                  script_args=[False, False, "positive", "comma", 0])
    info = json.loads(out["info"])
    images = [decode(b) for b in out["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1
    prompts = [t.split("\n")[0] for t in info["infotexts"][1:]]
    assert prompts == ["a fox", "a fox, in snow", "a fox, at night", "a fox, in snow, at night"]
    single = txt2img(c, prompt="a fox, in snow, at night")
    assert same(images[4], decode(single["images"][0]))  # same seed for every combination
    assert images[0].width > 2 * 64 and images[0].height > 2 * 64


def test_prompts_from_textbox_lines_and_options(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    lines = "a cat\n\n--prompt \"a dog\" --steps 2 --seed 77 --sampler_name \"DDIM\"\n"
    out = txt2img(c, prompt="", script_name="Prompts from file or textbox",
                  script_args=[True, False, "start", lines])
    info = json.loads(out["info"])
    assert len(out["images"]) == 2 and info["index_of_first_image"] == 0
    assert info["infotexts"][0].startswith("a cat\n")
    assert "Steps: 2, Sampler: DDIM" in info["infotexts"][1] and "Seed: 77" in info["infotexts"][1]
    dog = txt2img(c, prompt="a dog", steps=2, seed=77, sampler_name="DDIM")
    assert same(decode(out["images"][1]), decode(dog["images"][0]))
    # A1111 before 1.8 sent three args (no prompt_position)
    old = txt2img(c, script_name="prompts from file or textbox", script_args=[False, False, "x\ny"])
    assert len(old["images"]) == 2


def test_sd_upscale_tiles_and_blends(app: tuple[TestClient, Settings]) -> None:
    c, _ = app
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    init = base64.b64encode(buf.getvalue()).decode()
    r = c.post("/sdapi/v1/img2img", json={**BASE, "init_images": [init], "denoising_strength": 0.3,
                                          "script_name": "SD upscale", "script_args": [None, 16, "Lanczos", 2]})
    assert r.status_code == 200, r.text
    out = r.json()
    img = decode(out["images"][0])
    assert img.size == (128, 128)
    text = json.loads(out["info"])["infotexts"][0]
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in text
    bad = c.post("/sdapi/v1/img2img", json={**BASE, "init_images": [init], "script_name": "SD upscale",
                                            "script_args": [None, 16, "NoSuchUpscaler", 2]})
    assert bad.status_code == 400 and "upscaler_index" in bad.text


def test_tiles_cover_the_image_and_blend_without_seams() -> None:
    from sdcloud.scripts.sd_upscale import combine_tiles, split_tiles

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    tiles = split_tiles(img, 128, 96, 32)
    assert {(t.x, t.y) for t in tiles} >= {(0, 0), (300 - 128, 200 - 96)}
    assert same(combine_tiles(tiles, img.size, 32), img)  # untouched tiles give the image back
