"""Interrogate with a WD14-style ONNX tagger: a tiny real ONNX model built with the ``onnx``
helpers (mean colour -> tag scores), run by onnxruntime through the engine-free tagger and
``/sdapi/v1/interrogate``; the refusals say which file to put where."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdcloud.errors import NotFound
from sdcloud.interrogate import Interrogator, format_tag

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TAGS = [("general", 9), ("red_(color)", 0), ("blue_theme", 0), ("green_background", 0), ("hatsune_miku", 4)]


def write_tagger(folder: Path, size: int = 32) -> None:
    """model.onnx: NHWC BGR 0-255 -> mean per channel / 255 -> linear -> sigmoid; selected_tags.csv."""
    from onnx import TensorProto, helper, numpy_helper

    # channel order is BGR: column j of W scores tag j from (b, g, r)
    w = np.array([[0, 0, 0], [-12, -12, 12], [12, -12, -12], [-12, 12, -12], [-12, -12, 12]], np.float32).T
    b = np.array([0, -4, -4, -4, -1], np.float32)
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
             helper.make_node("Div", ["mean", "scale"], ["norm"]),
             helper.make_node("MatMul", ["norm", "w"], ["logits0"]),
             helper.make_node("Add", ["logits0", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    init = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
            numpy_helper.from_array(np.array(255.0, np.float32), "scale"), numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b")]
    graph = helper.make_graph(nodes, "tiny_tagger",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, size, size, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, len(TAGS)])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    lines = ["tag_id,name,category,count"] + [f"{i},{n},{c},1" for i, (n, c) in enumerate(TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n")


def test_tagger_scores_colours_and_formats_like_deepbooru(tmp_path: Path) -> None:
    write_tagger(tmp_path / "interrogators" / "wd-tiny")
    it = Interrogator(tmp_path)
    assert it.models() == ["wd-tiny"]
    red = it.tags(Image.new("RGB", (50, 50), (255, 0, 0)))
    assert list(red) == ["hatsune_miku", "red_(color)"]  # best first; "general" is a rating, left out
    assert it.caption(Image.new("RGB", (20, 20), (0, 0, 255))) == "blue theme"
    strict = it.tags(Image.new("RGB", (20, 20), (255, 0, 0)), character=1.0)
    assert strict == {"red_(color)": pytest.approx(1, abs=1e-3)}
    assert it.caption(Image.new("RGB", (20, 20), (255, 0, 0)), "wd-tiny") == "hatsune miku, red \\(color\\)"
    assert format_tag("^_^") == "^_^"


def test_refusals_say_what_to_put_where(tmp_path: Path) -> None:
    it = Interrogator(tmp_path)
    with pytest.raises(NotFound, match=r"model.onnx and selected_tags.csv in .*interrogators"):
        it.caption(Image.new("RGB", (8, 8)))
    with pytest.raises(NotFound, match="the CLIP interrogator needs a transformers BLIP captioning folder"):
        it.caption(Image.new("RGB", (8, 8)), "clip")
    (tmp_path / "interrogators" / "broken").mkdir(parents=True)
    (tmp_path / "interrogators" / "broken" / "model.onnx").write_bytes(b"nope")
    (tmp_path / "interrogators" / "broken" / "selected_tags.csv").write_text("tag_id,name,category,count\n")
    with pytest.raises(Exception, match="not a loadable ONNX model"):
        it.caption(Image.new("RGB", (8, 8)))


def test_interrogate_route(sdcloud_server: Any) -> None:
    folder = sdcloud_server.data_dir / "models" / "interrogators"
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    with sdcloud_server.client() as c:
        r = c.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
        assert r.status_code == 404 and "selected_tags.csv" in r.json()["detail"]
        write_tagger(folder / "wd-tiny")
        try:
            r = c.post("/sdapi/v1/interrogate", json={"image": image, "model": "deepdanbooru"})
            assert r.status_code == 200 and r.json() == {"caption": "green background"}
            r = c.post("/sdapi/v1/interrogate", json={"image": image})  # model clip, A1111's default
            assert r.status_code == 404 and "models/BLIP/<name>/" in r.json()["detail"]
            assert "or use model 'deepdanbooru' (wd-tiny)" in r.json()["detail"]
            assert c.post("/sdapi/v1/interrogate", json={"model": "deepdanbooru"}).status_code == 404
        finally:
            shutil.rmtree(folder)


def test_clip_interrogator_refusal_names_the_folders(tmp_path: Path) -> None:
    (tmp_path / "BLIP").mkdir()
    (tmp_path / "BLIP" / "model_base_caption_capfilt_large.pth").write_bytes(b"lavis")  # A1111's own file
    with pytest.raises(NotFound) as err:
        Interrogator(tmp_path).caption(Image.new("RGB", (8, 8)), "clip")
    msg = str(err.value)
    # the folders relative to the data dir, never the server's absolute path (issue 19)
    assert "models/BLIP/<name>/" in msg and "models/CLIP/<name>/" in msg and "\n" not in msg
    assert str(tmp_path) not in msg
    assert "model_base_caption_capfilt_large.pth is LAVIS's format" in msg


def test_clip_interrogator_caption_and_ranked_categories(tmp_path: Path) -> None:
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    from interrogate_models import write_clip_interrogator
    from sdcloud.clip_interrogate import MEAN, STD, ClipOptions

    write_clip_interrogator(tmp_path)
    it = Interrogator(tmp_path)
    image = Image.new("RGB", (48, 40), (200, 30, 30))
    caption = it.caption(image, "clip", ClipOptions(min_length=6, max_length=10))
    parts = caption.split(", ")
    assert len(parts) == 1 + 1 + 3 + 1  # BLIP, then artists (1), flavors (top 3), mediums (1), in file order
    blip = parts[0].split()
    assert 3 <= len(blip) <= 10 and not parts[0].startswith("a picture of")
    lists = {p.stem.split(".")[0]: p.read_text().splitlines() for p in (tmp_path / "interrogate").glob("*.txt")}
    assert parts[1] in lists["artists"] and set(parts[2:5]) <= set(lists["flavors"]) and parts[5] in lists["mediums"]
    # the medium is the one CLIP's own forward scores highest for this image
    clip = CLIPModel.from_pretrained(str(tmp_path / "CLIP" / "clip-tiny")).eval()
    tok = CLIPTokenizer.from_pretrained(str(tmp_path / "CLIP" / "clip-tiny"))
    arr = (np.asarray(image.resize((32, 32), Image.BICUBIC), np.float32) / 255 - MEAN) / STD
    pixels = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = clip(**tok(lists["mediums"], padding=True, return_tensors="pt"), pixel_values=pixels).logits_per_image
    assert parts[5] == lists["mediums"][int(logits[0].argmax())]
    skipped = it.caption(image, "clip", ClipOptions(min_length=6, max_length=10,
                                                    skip_categories=("artists", "flavors")))
    assert skipped == f"{parts[0]}, {parts[5]}"
