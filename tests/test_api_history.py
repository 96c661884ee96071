"""Output history: ``/api/history`` pages and searches the outputs folder (A1111's layout),
``/api/history/file`` serves files from it and nothing outside it; Save and Zip of results.

The app is the one ``sdcloud serve`` builds (``create_app``), driven in-process without its
start-up (no model is needed to browse files)."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sdcloud import history as history_mod
from sdcloud.api.app import create_app
from sdcloud.history import History
from sdcloud.image_files import write_png_atomic
from sdcloud.settings import Settings

DAY1, DAY2 = "2026-12-01", "2026-12-02"


def _infotext(prompt: str, seed: int) -> str:
    return (f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, "
            f"CFG scale: 7, Seed: {seed}, Size: 64x48, Model: demo")


def _image(path: Path, prompt: str, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png_atomic(Image.new("RGB", (64, 48), (seed % 256, 10, 10)), path, _infotext(prompt, seed))
    return path


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """Day 1: 5 txt2img images (cats and dogs); day 2: 2 images; one img2img image."""
    root = tmp_path / "data" / "outputs"
    for i in range(5):
        _image(root / "txt2img-images" / DAY1 / f"{i:05d}-{100 + i}.png", "a cat" if i % 2 else "a dog", 100 + i)
    _image(root / "txt2img-images" / DAY2 / "00000-200.png", "a red fox", 200)
    _image(root / "txt2img-images" / DAY2 / "00001-201.png", "a red CAT, sitting", 201)
    _image(root / "img2img-images" / DAY2 / "00000-300.png", "a boat", 300)
    (root / "txt2img-images" / DAY2 / "notes.md").write_text("not an image")
    return root


def _client(outputs: Path, **settings: object) -> TestClient:
    s = Settings.load({"data_dir": outputs.parent, **settings})
    return TestClient(create_app(s, ui=False))


def test_history_pages_newest_day_first_with_infotext(outputs: Path) -> None:
    c = _client(outputs)
    r = c.get("/api/history")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["kind"] == "txt2img" and data["date"] == DAY2 and data["dates"] == [DAY2, DAY1]
    assert [i["name"] for i in data["items"]] == ["00001-201.png", "00000-200.png"]  # newest first
    first = data["items"][0]
    assert first["path"] == f"txt2img-images/{DAY2}/00001-201.png"
    assert first["infotext"] == _infotext("a red CAT, sitting", 201)
    assert data["total"] == 2 and data["pages"] == 1 and data["has_more"] is False

    # the listed URL serves the very file, byte for byte
    image = c.get(first["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (outputs / first["path"]).read_bytes()

    # paging through day 1, two at a time
    pages = [c.get("/api/history", params={"date": DAY1, "page": p, "per_page": 2}).json() for p in range(4)]
    assert [[i["name"][:5] for i in p["items"]] for p in pages] == [["00004", "00003"], ["00002", "00001"],
                                                                  ["00000"], []]
    assert [p["has_more"] for p in pages] == [True, True, False, False]
    assert pages[0]["total"] == 5 and pages[0]["pages"] == 3

    every = c.get("/api/history", params={"date": "all", "per_page": 100}).json()
    assert every["total"] == 7 and every["items"][0]["date"] == DAY2 and every["items"][-1]["date"] == DAY1
    img2img = c.get("/api/history", params={"kind": "img2img"}).json()
    assert [i["name"] for i in img2img["items"]] == ["00000-300.png"]


def test_history_search_by_prompt(outputs: Path) -> None:
    c = _client(outputs)
    found = c.get("/api/history", params={"q": "cat", "date": "all"}).json()
    assert [i["name"] for i in found["items"]] == ["00001-201.png", "00003-103.png", "00001-101.png"]
    assert found["total"] == 3 and found["complete"] is True and found["scanned"] == 7
    # every word must appear, in any case; a seed is searchable too
    assert [i["name"] for i in c.get("/api/history", params={"q": "RED cat", "date": "all"}).json()["items"]] == [
        "00001-201.png"]
    assert [i["name"] for i in c.get("/api/history", params={"q": "Seed: 102", "date": DAY1}).json()["items"]] == [
        "00002-102.png"]
    assert c.get("/api/history", params={"q": "unicorn", "date": "all"}).json()["items"] == []
    # a page of matches: one at a time
    second = c.get("/api/history", params={"q": "cat", "date": "all", "per_page": 1, "page": 1}).json()
    assert [i["name"] for i in second["items"]] == ["00003-103.png"] and second["has_more"] is True


def test_search_work_is_bounded(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search reads at most SEARCH_SCAN_LIMIT infotexts per request and says it stopped early."""
    monkeypatch.setattr(history_mod, "SEARCH_SCAN_LIMIT", 3)
    read: list[str] = []
    original = History.infotext

    def counting(self: History, rel: str) -> str:
        read.append(rel)
        return original(self, rel)

    monkeypatch.setattr(History, "infotext", counting)
    c = _client(outputs)
    data = c.get("/api/history", params={"q": "boat-that-is-not-there", "date": "all"}).json()
    assert data["scanned"] == 3 and data["complete"] is False and data["total"] is None and data["has_more"]
    assert len(read) == 3


def test_history_paging_bounds_and_bad_input_are_4xx(outputs: Path) -> None:
    c = _client(outputs)
    for params in ({"page": -1}, {"per_page": 0}, {"per_page": 101}, {"page": "x"}):
        r = c.get("/api/history", params=params)
        assert r.status_code == 422, (params, r.text)
    r = c.get("/api/history", params={"kind": "secrets"})
    assert r.status_code == 400 and "txt2img" in r.json()["detail"]
    r = c.get("/api/history", params={"date": "../../etc"})
    assert r.status_code == 400 and "YYYY-MM-DD" in r.json()["detail"]
    r = c.get("/api/history", params={"date": "1999-01-01"})
    assert r.status_code == 404 and r.json()["detail"] == "no txt2img outputs on 1999-01-01"
    r = c.get("/api/history", params={"q": "x" * 501})
    assert r.status_code == 400
    # a page far past the end is just empty
    far = c.get("/api/history", params={"page": 5000}).json()
    assert far["items"] == [] and far["total"] == 2


def test_file_route_refuses_everything_outside_the_outputs(outputs: Path) -> None:
    secret = outputs.parent / "secret.png"
    secret.write_bytes(b"\x89PNG TOP-SECRET-BYTES")
    (outputs / "txt2img-images" / "link.png").symlink_to(secret)
    (outputs.parent / "config.json").write_text("{}")
    c = _client(outputs)
    for path in ("../secret.png", "txt2img-images/../../secret.png", "/etc/passwd", str(secret),
                 "txt2img-images/link.png", "..\\secret.png", "txt2img-images//x.png", "./secret.png",
                 "C:/x.png", "txt2img-images/2026-12-02/notes.md", "../config.json", "", "x.png\0"):
        r = c.get("/api/history/file", params={"path": path})
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert b"TOP-SECRET" not in r.content
        assert r.headers["content-type"].startswith("application/json")
    assert c.get("/api/history/file", params={"path": "txt2img-images/2026-12-02/99999-1.png"}).status_code == 404
    assert c.get("/api/history/file").status_code == 422


def test_history_is_behind_the_same_auth(outputs: Path) -> None:
    c = _client(outputs, auth=("painter:s3cret-Pass",))
    assert c.get("/api/history").status_code == 401
    path = f"txt2img-images/{DAY2}/00000-200.png"
    assert c.get("/api/history/file", params={"path": path}).status_code == 401
    ok = c.get("/api/history/file", params={"path": path}, auth=("painter", "s3cret-Pass"))
    assert ok.status_code == 200 and ok.content[:4] == b"\x89PNG"


def test_save_copies_with_infotext_and_writes_a1111_log_csv(outputs: Path) -> None:
    h = History(outputs)
    day = outputs / "txt2img-images" / DAY1
    saved = h.save([day / "00001-101.png", day / "00002-102.png"])
    assert [p.name for p in saved] == ["00000-101.png", "00001-102.png"]
    assert all(p.parent == outputs / "save" for p in saved)
    assert saved[0].read_bytes() == (day / "00001-101.png").read_bytes()  # infotext and all
    again = h.save([day / "00003-103.png"])
    assert again[0].name == "00002-103.png"  # the counter goes on
    with open(outputs / "save" / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename",
                       "negative_prompt"]
    assert rows[1] == ["a cat", "101", "64", "48", "Euler a", "7", "20", "00000-101.png", "blurry"]
    assert [r[7] for r in rows[1:]] == ["00000-101.png", "00001-102.png", "00002-103.png"]
    assert not [p for p in (outputs / "save").iterdir() if p.name.startswith(".")]  # no temp files left
    # saved copies are browsable as kind "save"
    listed = History(outputs).page("save")
    assert [i.name for i in listed.items] == ["00002-103.png", "00001-102.png", "00000-101.png"]

    with pytest.raises(Exception, match="not an image in the outputs folder"):
        h.save([outputs.parent / "elsewhere.png"])


def test_zip_holds_the_results(outputs: Path, tmp_path: Path) -> None:
    h = History(outputs)
    day = outputs / "txt2img-images" / DAY1
    files = [day / "00001-101.png", day / "00002-102.png"]
    z = h.zip(files, tmp_path / "zips", model="demo")
    assert z.name.endswith("_[demo]_101-102.zip")
    with zipfile.ZipFile(z) as zf:
        assert zf.namelist() == ["00001-101.png", "00002-102.png"]
        assert zf.read("00001-101.png") == files[0].read_bytes()
    with pytest.raises(Exception, match="no images to zip"):
        h.zip([], tmp_path)


def test_infotext_cache_follows_file_changes(outputs: Path) -> None:
    h = History(outputs)
    rel = f"txt2img-images/{DAY2}/00000-200.png"
    assert "a red fox" in h.infotext(rel)
    path = outputs / rel
    _image(path, "a blue whale", 200)
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert "a blue whale" in h.infotext(rel)
