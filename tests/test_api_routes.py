"""Every /sdapi/v1 and /api route over real HTTP against ``sdcloud serve`` with the demo model."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from sdcloud.jobs import FINISHED
from waiting import wait_until

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


def png_b64(size: tuple[int, int] = (64, 64), color: str = "red", mode: str = "RGB", **info: str) -> str:
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for k, v in info.items():
        meta.add_text(k, v)
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG", pnginfo=meta)
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    assert not b64.startswith("data:"), "A1111 answers raw base64"
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def client(sdcloud_server: Any) -> httpx.Client:
    with sdcloud_server.client() as c:
        yield c


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    return wait_until(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["state"] in FINISHED and j,
                      timeout, 0.05, f"job {job_id} to finish")


def test_txt2img_answers_like_a1111(client: httpx.Client) -> None:
    body = {
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "seed": 1234,
        "batch_size": 2,
        "not_an_a1111_field": [1, 2],
        "cfg_scale": 7,
        **SMALL,
    }
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    assert "x-process-time" in r.headers
    data = r.json()
    assert set(data) == {"images", "parameters", "info"}
    assert len(data["images"]) == 2
    img = decode(data["images"][0])
    assert img.format == "PNG" and img.size == (64, 64)
    assert img.info["parameters"].startswith("a red fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler")
    info = json.loads(data["info"])
    assert info["all_seeds"] == [1234, 1235]
    assert info["all_prompts"] == ["a red fox", "a red fox"]
    assert info["infotexts"][1] == decode(data["images"][1]).info["parameters"]
    assert info["index_of_first_image"] == 0 and info["cfg_scale"] == 7.0
    for key in (
        "negative_prompt",
        "subseed",
        "all_subseeds",
        "sd_model_name",
        "sd_model_hash",
        "job_timestamp",
        "clip_skip",
        "version",
        "styles",
        "width",
        "height",
        "steps",
        "batch_size",
        "sampler_name",
    ):
        assert key in info
    params = data["parameters"]
    assert params["sampler_index"] == "Euler" and params["cfg_scale"] == 7.0
    assert params["denoising_strength"] is None and params["script_args"] == [] and params["alwayson_scripts"] == {}
    assert "not_an_a1111_field" not in params


def test_send_images_false_and_save_images_true(client: httpx.Client, sdcloud_server: Any) -> None:
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "send_images": False, **SMALL, "steps": 1})
    assert r.status_code == 200 and r.json()["images"] == []
    outputs = sdcloud_server.data_dir / "outputs" / "txt2img-images"
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    r = client.post(
        "/sdapi/v1/txt2img",
        json={"prompt": "saved", "save_images": True, "batch_size": 2, "seed": 7, **SMALL, "steps": 1},
    )
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 3 and info["index_of_first_image"] == 1  # the grid comes first
    assert decode(data["images"][0]).size == (128, 64)
    new = sorted(set(outputs.rglob("*.png")) - before)
    assert [p.name.split("-", 1)[1] for p in new] == ["7.png", "8.png"]
    assert Image.open(new[0]).info["parameters"] == info["infotexts"][1]
    assert list((sdcloud_server.data_dir / "outputs" / "txt2img-grids").rglob("grid-*.png"))


def test_img2img_with_data_url_and_mask(client: httpx.Client) -> None:
    init = "data:image/png;base64," + png_b64((96, 80), "blue")
    mask = png_b64((96, 80), "white", mode="L")
    body = {
        "init_images": [init],
        "mask": mask,
        "prompt": "paint",
        "denoising_strength": 0.5,
        "inpainting_fill": 1,
        "seed": 3,
        **SMALL,
    }
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    # "Only masked" (the API default) pastes the repainted area back into the original
    assert decode(data["images"][0]).size == (96, 80)
    assert data["parameters"]["init_images"] is None and data["parameters"]["mask"] is None
    assert "Denoising strength: 0.5" in json.loads(data["info"])["infotexts"][0]
    r = client.post("/sdapi/v1/img2img", json={"prompt": "no init", **SMALL})
    assert r.status_code == 404 and r.json()["detail"] == "Init image not found"


def test_png_info_reads_back_the_infotext(client: httpx.Client) -> None:
    text = (
        "a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, "
        "Seed: 42, Size: 512x768, Model hash: 6ce0161689, Model: v1-5"
    )
    r = client.post("/sdapi/v1/png-info", json={"image": png_b64(parameters=text, Software="x")})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["info"] == text
    assert data["items"] == {"Software": "x"}
    p = data["parameters"]
    assert (p["Prompt"], p["Negative prompt"], p["Steps"], p["Size-1"], p["Size-2"]) == (
        "a cat",
        "dog",
        "20",
        "512",
        "768",
    )
    r = client.post("/sdapi/v1/png-info", json={"image": png_b64()})
    assert r.json() == {"info": "", "items": {}, "parameters": {}}


def test_progress_preview_interrupt_and_skip(client: httpx.Client) -> None:
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    body = {
        "prompt": "long",
        "width": 64,
        "height": 64,
        "steps": 40,
        "n_iter": 2,
        "override_settings": {"show_progress_every_n_steps": 1},
    }
    job = client.post("/api/txt2img", json=body)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    p = wait_until(lambda: (q := client.get("/sdapi/v1/progress").json())["state"]["sampling_step"] >= 1
                   and q["current_image"] and q, 120, 0.02, "a progress report with a preview")
    assert p["state"]["job_count"] == 2 and p["state"]["sampling_steps"] == 80  # steps over both batches
    assert 0 < p["progress"] <= 1 and p["state"]["job"] == f"task({job_id})"
    assert decode(p["current_image"]).format == "PNG"
    assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
    skip = client.post("/sdapi/v1/skip")
    assert skip.status_code == 200 and skip.json() is None
    r = client.post("/sdapi/v1/interrupt")
    assert r.status_code == 200 and r.json() == {}
    final = wait_job(client, job_id)
    assert final["state"] == "done" and final["result"]["interrupted"] is True
    assert final["result"]["info"]["all_seeds"]  # finished images are kept


def test_options_round_trip(client: httpx.Client) -> None:
    opts = client.get("/sdapi/v1/options").json()
    assert opts["sd_model_checkpoint"] == "demo"
    for key in ("sd_checkpoint_hash", "sd_vae", "CLIP_stop_at_last_layers", "samples_format"):
        assert key in opts
    r = client.post("/sdapi/v1/options", json=opts)  # the whole dict back, as Open WebUI does
    assert r.status_code == 200 and r.json() is None
    r = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "unknown_option": 1})
    assert r.status_code == 200
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    out = client.post("/sdapi/v1/txt2img", json={"prompt": "clip", **SMALL, "steps": 1}).json()
    assert "Clip skip: 2" in json.loads(out["info"])["infotexts"][0]
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    bad = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": "two"})
    assert bad.status_code == 400 and bad.json()["error"] == "BadRequest"
    missing = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert missing.status_code == 404 and "no-such-model" in missing.json()["detail"]


def test_infotext_fills_unset_fields_and_kept_overrides(client: httpx.Client) -> None:
    body = {
        "infotext": "a dog\nNegative prompt: cat\nSteps: 1, Sampler: Euler a, Seed: 77, Size: 64x64",
        "seed": 5,
        "override_settings": {"CLIP_stop_at_last_layers": 2},
        "override_settings_restore_afterwards": False,
    }
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["width"]) == ("a dog", "cat", 1, 64)
    assert info["all_seeds"] == [5] and info["sampler_name"] == "Euler a"  # a field the request set wins
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})


def test_switching_the_checkpoint_through_options(client: httpx.Client, sdcloud_server: Any) -> None:
    from sdcloud.engine.demo import write_demo_checkpoint

    ckpt = sdcloud_server.data_dir / "models" / "Stable-diffusion" / "tiny.safetensors"
    write_demo_checkpoint(ckpt, seed=1)
    assert client.post("/sdapi/v1/refresh-checkpoints").json() is None
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    assert "tiny.safetensors" in titles and "demo" in titles
    try:
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"}).status_code == 200
        opts = client.get("/sdapi/v1/options").json()
        assert opts["sd_model_checkpoint"].startswith("tiny.safetensors [")
        entry = next(m for m in client.get("/sdapi/v1/sd-models").json() if m["model_name"] == "tiny")
        assert entry["title"] == opts["sd_model_checkpoint"] and entry["sha256"] == opts["sd_checkpoint_hash"]
        assert entry["hash"] == entry["sha256"][:10] and entry["filename"] == str(ckpt)
        out = client.post("/sdapi/v1/txt2img", json={"prompt": "p", **SMALL, "steps": 1}).json()
        info = json.loads(out["info"])
        assert info["sd_model_name"] == "tiny" and info["sd_model_hash"] == entry["hash"]
        # a per-request override uses another model for one job only
        out = client.post(
            "/sdapi/v1/txt2img",
            json={"prompt": "p", **SMALL, "steps": 1, "override_settings": {"sd_model_checkpoint": "demo"}},
        ).json()
        assert json.loads(out["info"])["sd_model_name"] == "demo"
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == opts["sd_model_checkpoint"]
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        assert client.post("/sdapi/v1/reload-checkpoint").json() == {}
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == opts["sd_model_checkpoint"]
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}  # the next job loads it again
        out = client.post("/sdapi/v1/txt2img", json={"prompt": "p", **SMALL, "steps": 1}).json()
        assert json.loads(out["info"])["sd_model_name"] == "tiny"
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "demo"})
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "demo"


def test_listing_routes(client: httpx.Client, sdcloud_server: Any) -> None:
    (sdcloud_server.data_dir / "styles.csv").write_text('name,prompt,negative_prompt\nsharp,"{prompt}, sharp",blur\n')
    get = lambda path: client.get("/sdapi/v1/" + path)  # noqa: E731
    samplers = get("samplers").json()
    assert {"name": "Euler", "aliases": ["k_euler"], "options": {}} in samplers
    assert next(s for s in samplers if s["name"] == "DPM++ 2M")["options"] == {"scheduler": "karras"}
    assert {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    } in get("schedulers").json()
    assert [u["name"] for u in get("upscalers").json()] == ["None", "Lanczos", "Nearest"]
    assert get("latent-upscale-modes").json()[0] == {"name": "Latent"}
    assert get("sd-vae").json() == [] and get("loras").json() == []
    assert get("embeddings").json() == {"loaded": {}, "skipped": {}}
    assert get("prompt-styles").json() == [{"name": "sharp", "prompt": "{prompt}, sharp", "negative_prompt": "blur"}]
    assert get("scripts").json() == {"txt2img": [], "img2img": []}
    assert get("script-info").json() == [] and get("hypernetworks").json() == []
    assert get("face-restorers").json() == [] and get("realesrgan-models").json() == []
    flags = get("cmd-flags").json()
    assert flags["api"] is True and flags["api_auth"] is None and flags["port"] == sdcloud_server.port
    mem = get("memory").json()
    assert mem["ram"]["total"] > 0 and "cuda" in mem
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings"):
        r = client.post("/sdapi/v1/" + path)
        assert r.status_code == 200 and r.json() is None
    styled = client.post("/sdapi/v1/txt2img", json={"prompt": "cat", "styles": ["sharp"], **SMALL, "steps": 1})
    info = json.loads(styled.json()["info"])
    assert info["prompt"] == "cat, sharp" and info["negative_prompt"] == "blur" and info["styles"] == ["sharp"]


def test_extras_upscale(client: httpx.Client) -> None:
    src = png_b64((40, 30), "green", parameters="kept")
    r = client.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"])
    assert out.size == (80, 60) and out.info["parameters"] == "kept"
    r = client.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": src, "name": "a.png"}, {"data": png_b64((10, 10)), "name": "b.png"}],
            "upscaler_1": "Nearest",
            "resize_mode": 1,
            "upscaling_resize_w": 50,
            "upscaling_resize_h": 20,
        },
    )
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(50, 20), (50, 20)]
    bad = client.post("/sdapi/v1/extra-single-image", json={"image": src, "upscaler_1": "ESRGAN_4x"})
    assert bad.status_code == 400 and "Lanczos" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/sdapi/v1/txt2img", b"{not json", 422, ""),
        ("/sdapi/v1/txt2img", {"steps": "many"}, 422, "steps"),
        (
            "/sdapi/v1/txt2img",
            {"sampler_name": "Bogus Sampler", **{k: v for k, v in SMALL.items() if k != "sampler_name"}},
            400,
            "unknown sampler",
        ),
        ("/sdapi/v1/txt2img", {"width": 4096, "height": 64}, 400, "width must be between 64 and 256"),
        ("/sdapi/v1/txt2img", {**SMALL, "steps": 0}, 400, "steps"),
        ("/sdapi/v1/txt2img", {**SMALL, "batch_size": 50}, 400, "batch_size"),
        ("/sdapi/v1/txt2img", {**SMALL, "prompt": "x" * 3000}, 400, "at most 2000"),
        ("/sdapi/v1/txt2img", {**SMALL, "seed": 2**40}, 400, "seed"),
        ("/sdapi/v1/txt2img", {**SMALL, "script_name": "x/y plot"}, 400, "script"),
        ("/sdapi/v1/img2img", {"init_images": ["%%%not base64%%%"], **SMALL}, 400, "init image 0"),
        (
            "/sdapi/v1/img2img",
            {"init_images": [base64.b64encode(b"not an image").decode()], **SMALL},
            400,
            "not a readable image",
        ),
        (
            "/sdapi/v1/img2img",
            {"init_images": ["http://127.0.0.1:1/x.png"], **SMALL},
            400,
            "URL images are off",
        ),
        ("/sdapi/v1/png-info", {"image": 12}, 422, "image"),
        ("/sdapi/v1/options", [1, 2], 422, ""),
    ],
)
def test_bad_input_is_a_4xx_json_error(client: httpx.Client, path: str, body: Any, status: int, needle: str) -> None:
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert {"error", "detail"} <= set(data)
    assert needle in json.dumps(data)


def test_oversized_body_and_unknown_route(client: httpx.Client) -> None:
    r = client.post("/sdapi/v1/txt2img", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    chunks = iter([b"x" * (1024 * 1024)] * 3)  # no Content-Length: counted while it streams in
    r = client.post("/sdapi/v1/txt2img", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    r = client.get("/sdapi/v1/interrogate")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"


def test_a_failing_generation_reports_and_the_server_keeps_serving(client: httpx.Client, sdcloud_server: Any) -> None:
    lora = sdcloud_server.data_dir / "models" / "Lora" / "broken.safetensors"
    lora.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json....")
    client.post("/sdapi/v1/refresh-loras")
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x <lora:broken:1>", **SMALL, "steps": 1})
    assert 400 <= r.status_code < 500, r.text
    assert "broken" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x <lora:missing:1>", **SMALL, "steps": 1})
    assert r.status_code == 404 and "missing" in r.json()["detail"]
    ok = client.post("/sdapi/v1/txt2img", json={"prompt": "fine", **SMALL, "steps": 1})
    assert ok.status_code == 200
    lora.unlink()
    client.post("/sdapi/v1/refresh-loras")


def test_queue_routes(client: httpx.Client) -> None:
    slow = client.post(
        "/api/txt2img", json={"prompt": "slow", "width": 64, "height": 64, "steps": 40, "n_iter": 2}
    ).json()
    queued = client.post("/api/txt2img", json={"prompt": "queued", **SMALL}).json()
    last = client.post("/api/txt2img", json={"prompt": "last", **SMALL, "steps": 1, "seed": 99}).json()
    assert slow["state"] in ("queued", "running")
    listed = client.get("/api/queue").json()["jobs"]
    ids = [j["id"] for j in listed]
    assert ids.index(slow["id"]) < ids.index(queued["id"]) < ids.index(last["id"])
    got = client.get(f"/api/queue/{queued['id']}").json()
    assert got["state"] == "queued" and got["position"] >= 1
    assert client.get(f"/api/queue/{last['id']}").json()["position"] == got["position"] + 1
    cancelled = client.post(f"/api/queue/{queued['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert client.get(f"/api/queue/{last['id']}").json()["position"] == got["position"]
    client.delete(f"/api/queue/{slow['id']}")  # stops the running job between steps
    assert wait_job(client, slow["id"])["state"] == "cancelled"
    done = wait_job(client, last["id"])
    assert done["state"] == "done" and done["result"]["info"]["all_seeds"] == [99]
    assert client.get(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"
    img = client.get(done["result"]["images"][0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).info["parameters"].startswith("last")
    assert client.get(f"/api/jobs/{last['id']}/images/5").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.delete("/api/queue/nope").status_code == 404
