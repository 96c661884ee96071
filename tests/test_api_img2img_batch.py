"""``/api/img2img/batch``: A1111's img2img Batch over folders on the server's disk, against a
real ``sdcloud serve --model demo``: one output per input named after it, masks from a mask
folder, progress, and a 4xx with a message for every folder it must not touch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import ServerProcess

pytestmark = pytest.mark.slow

BODY = {"prompt": "a batch", "steps": 2, "width": 64, "height": 64, "seed": 3, "denoising_strength": 0.75}


def _wait_done(client: object, batch_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 300
    while True:
        view = client.get(f"/api/img2img/batch/{batch_id}").json()  # type: ignore[attr-defined]
        if view["state"] != "running":
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def _inputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (30, 120, 200)).save(folder / "one.png")
    Image.new("RGB", (64, 64), (30, 120, 200)).save(folder / "two.jpg")
    (folder / "notes.txt").write_text("not an image")


def test_batch_over_a_folder_writes_one_image_per_input(sdcloud_server: ServerProcess) -> None:
    data = sdcloud_server.data_dir
    _inputs(data / "in-plain")
    with sdcloud_server.client() as client:
        r = client.post("/api/img2img/batch", json={**BODY, "input_dir": "in-plain", "output_dir": "out-plain"})
        assert r.status_code == 202, r.text
        assert r.json()["total"] == 2
        view = _wait_done(client, r.json()["id"])
    assert view["state"] == "done" and view["finished"] == 2 and view["errors"] == []
    assert sorted(view["written"]) == ["one.png", "two.png"]
    for name in ("one.png", "two.png"):
        image = Image.open(data / "out-plain" / name)
        assert image.size == (64, 64)
        assert image.info["parameters"].startswith("a batch\n")
        assert "Mask blur" not in image.info["parameters"]


def test_batch_with_masks_and_resize_by(sdcloud_server: ServerProcess) -> None:
    data = sdcloud_server.data_dir
    _inputs(data / "in-masked")
    masks = data / "masks"
    masks.mkdir()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    mask.save(masks / "one.png")  # only "one" has a mask: "two" is skipped, as in A1111
    mask.save(masks / "other.png")  # (a folder of one mask would serve every image)
    with sdcloud_server.client() as client:
        r = client.post("/api/img2img/batch", json={
            **BODY, "input_dir": str(data / "in-masked"), "output_dir": "out-masked", "inpaint_mask_dir": "masks",
            "inpainting_fill": 1, "inpaint_full_res": False, "scale_by": 1.5})
        assert r.status_code == 202, r.text
        view = _wait_done(client, r.json()["id"])
    assert view["written"] == ["one.png"]
    assert any("two.jpg" in e and "no mask" in e for e in view["errors"]), view["errors"]
    out = Image.open(data / "out-masked" / "one.png")
    assert out.size == (96, 96)  # Resize by 1.5
    assert "Mask blur: 4" in out.info["parameters"]
    right = [out.convert("RGB").getpixel((x, y)) for x in range(80, 96) for y in range(96)]
    assert all(abs(p[2] - 200) <= 12 for p in right)  # the unmasked half is kept


@pytest.mark.parametrize(("field", "value", "message"), [
    ("input_dir", "/etc", "outside the folders batch may use"),
    ("input_dir", "../..", "outside the folders batch may use"),
    ("input_dir", "no-such-folder", "is not a folder"),
    ("input_dir", ".sdcloud", "state folder"),
    ("output_dir", "/tmp/anywhere", "outside the folders batch may use"),
    ("output_dir", "in-errors", "is the input directory"),
    ("inpaint_mask_dir", "/etc", "outside the folders batch may use"),
])
def test_bad_folders_are_refused_with_a_message(sdcloud_server: ServerProcess, field: str, value: str,
                                                message: str) -> None:
    folder = sdcloud_server.data_dir / "in-errors"
    if not folder.exists():
        _inputs(folder)
    body = {**BODY, "input_dir": "in-errors", "output_dir": "out-errors", field: value}
    with sdcloud_server.client() as client:
        r = client.post("/api/img2img/batch", json=body)
    assert r.status_code == 400, r.text
    assert message in r.text
    assert str(sdcloud_server.data_dir) not in r.text  # no server path in the answer


def test_a_bad_request_is_refused_before_anything_runs(sdcloud_server: ServerProcess) -> None:
    folder = sdcloud_server.data_dir / "in-bad-request"
    _inputs(folder)
    with sdcloud_server.client() as client:
        r = client.post("/api/img2img/batch", json={**BODY, "steps": 10_000, "input_dir": folder.name,
                                                   "output_dir": "out-bad-request"})
    assert 400 <= r.status_code < 500 and "steps" in r.text, r.text
    assert not (sdcloud_server.data_dir / "out-bad-request").exists()


def test_empty_folder_and_unknown_batch(sdcloud_server: ServerProcess) -> None:
    (sdcloud_server.data_dir / "in-empty").mkdir()
    with sdcloud_server.client() as client:
        r = client.post("/api/img2img/batch", json={**BODY, "input_dir": "in-empty", "output_dir": "o"})
        assert r.status_code == 400 and "has no images" in r.text
        assert client.get("/api/img2img/batch/nope").status_code == 404


def test_allowed_folder_outside_the_data_folder(start_server: object, tmp_path: Path) -> None:
    shared = tmp_path / "drive"
    _inputs(shared / "in")
    server = start_server("--allow-batch-dir", str(shared), env={"SDCLOUD_MAX_WIDTH": "256"})  # type: ignore[operator]
    with server.client() as client:
        r = client.post("/api/img2img/batch", json={**BODY, "input_dir": str(shared / "in"),
                                                   "output_dir": str(shared / "out")})
        assert r.status_code == 202, r.text
        view = _wait_done(client, r.json()["id"])
    assert sorted(p.name for p in (shared / "out").iterdir()) == ["one.png", "two.png"], view
