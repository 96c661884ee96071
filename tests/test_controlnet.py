"""ControlNet on the demo models: a tiny random ControlNet built from the demo UNet, saved as an
A1111-style single file (and in the diffusers layout), loaded from models/ControlNet, applied
by units in sd-webui-controlnet's vocabulary; preprocessors; infotext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from sdcloud.controlnet import fixtures, models, preprocessors
from sdcloud.controlnet.apply import fit, pixel_perfect_resolution
from sdcloud.controlnet.units import ControlUnit, parse_units
from sdcloud.engine.engine import Engine
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest, Unsupported
from sdcloud.infotext import parse_infotext


def hint_image(size: tuple[int, int] = (64, 64)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).ellipse((10, 10, size[0] - 10, size[1] - 10), outline="black", width=4)
    return img


@pytest.fixture(scope="module")
def cn_engine(engine: Engine) -> Engine:
    folder = engine.settings.models_root / "ControlNet"
    fixtures.save_controlnet(folder / "control_tiny_canny.safetensors", engine.pipeline.unet, "A1111", seed=1)
    fixtures.save_controlnet(folder / "control_tiny_diffusers.safetensors", engine.pipeline.unet, "diffusers", seed=2)
    return engine


def req(**kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a ring", width=64, height=64, steps=3, seed=5, sampler_name="Euler")
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def arr(r: object) -> np.ndarray:
    return np.asarray(r.images[0]).astype(np.int16)  # type: ignore[attr-defined]


def test_a1111_single_file_loads_into_a_diffusers_controlnet(cn_engine: Engine) -> None:
    folder = cn_engine.settings.models_root / "ControlNet"
    state = fixtures.random_controlnet(cn_engine.pipeline.unet, seed=1).state_dict()
    loaded = models.load_controlnet(folder / "control_tiny_canny.safetensors", cn_engine.pipeline.unet).state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    assert models.resolve(folder, "control_tiny_canny [d14c016b]").name == "control_tiny_canny.safetensors"
    with pytest.raises(Unsupported, match="available: control_tiny_canny, control_tiny_diffusers"):
        models.resolve(folder, "control_v11p_sd15_openpose")


def test_not_a_controlnet_and_wrong_architecture_are_one_line(cn_engine: Engine, tmp_path) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "mystery.safetensors"))
    with pytest.raises(Unsupported, match=r"mystery.safetensors: not a ControlNet"):
        models.load_controlnet(tmp_path / "mystery.safetensors", cn_engine.pipeline.unet)
    from sdcloud.engine.demo import build_demo_pipeline

    fixtures.save_controlnet(tmp_path / "xl_cn.safetensors", build_demo_pipeline("sdxl").unet, "diffusers")
    with pytest.raises(Unsupported, match="xl_cn.safetensors: a ControlNet for another model") as err:
        models.load_controlnet(tmp_path / "xl_cn.safetensors", cn_engine.pipeline.unet)
    assert "\n" not in str(err.value)


def test_controlnet_steers_the_image_and_writes_infotext(cn_engine: Engine) -> None:
    base = cn_engine.generate(req())
    unit = ControlUnit(module="canny", model="control_tiny_canny [d14c016b]", image=hint_image())
    with_cn = cn_engine.generate(req(controlnet=[unit]))
    assert np.abs(arr(with_cn) - arr(base)).mean() > 0.5
    params = parse_infotext(with_cn.infotexts[0])
    assert params["ControlNet 0"] == (  # the extension's format; unset thresholds (-1) left out
        "Module: canny, Model: control_tiny_canny [d14c016b], Weight: 1, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Guidance Start: 0, Guidance End: 1, Pixel Perfect: False, Control Mode: Balanced")
    assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny [d14c016b], Weight: 1,' in with_cn.infotexts[0]
    # weight 0 or a guidance window the run never enters: the plain image
    off = ControlUnit(module="canny", model="control_tiny_canny", image=hint_image(), weight=0)
    assert np.array_equal(arr(cn_engine.generate(req(controlnet=[off]))), arr(base))
    late = ControlUnit(module="canny", model="control_tiny_canny", image=hint_image(), guidance_start=1.0)
    assert np.array_equal(arr(cn_engine.generate(req(controlnet=[late]))), arr(base))


def test_two_units_control_modes_and_hires(cn_engine: Engine) -> None:
    one = ControlUnit(module="canny", model="control_tiny_canny", image=hint_image())
    two = ControlUnit(module="invert", model="control_tiny_diffusers", image=hint_image((96, 64)), weight=0.7,
                      resize_mode=2, pixel_perfect=True)
    single = arr(cn_engine.generate(req(controlnet=[one])))
    both = cn_engine.generate(req(controlnet=[one, two]))
    assert not np.array_equal(arr(both), single)
    assert "ControlNet 1" in parse_infotext(both.infotexts[0])
    modes = [arr(cn_engine.generate(req(controlnet=[ControlUnit(module="canny", model="control_tiny_canny",
                                                                 image=hint_image(), control_mode=m)])))
             for m in (0, 1, 2)]
    assert not np.array_equal(modes[0], modes[1]) and not np.array_equal(modes[1], modes[2])
    hires = cn_engine.generate(req(controlnet=[one], enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                                   denoising_strength=0.5))
    assert hires.images[0].size == (96, 96)


def test_img2img_uses_the_init_image_and_inpaint_mask(cn_engine: Engine) -> None:
    init = hint_image()
    unit = ControlUnit(module="inpaint_only", model="control_tiny_canny")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 44, 44), fill=255)
    r = cn_engine.generate(req(init_images=[init], mask=mask, denoising_strength=0.6, controlnet=[unit]))
    plain = cn_engine.generate(req(init_images=[init], mask=mask, denoising_strength=0.6))
    assert not np.array_equal(arr(r), arr(plain))


def test_units_parse_like_the_extension() -> None:
    units = parse_units({"args": [
        {"input_image": "abc", "module": "canny", "model": "m [1234abcd]", "resize_mode": "Just Resize",
         "control_mode": "ControlNet is more important", "processor_res": -1, "weight": "0.5"},
        {"enabled": False, "model": "m"}, {"model": "None", "image": "x"},
        {"image": {"image": "img", "mask": "msk"}, "model": "m", "resize_mode": "Envelope (Outer Fit)"}]})
    assert len(units) == 2
    assert (units[0].image, units[0].resize_mode, units[0].control_mode, units[0].processor_res, units[0].weight) \
        == ("abc", 0, 2, 512, 0.5)
    assert (units[1].image, units[1].mask, units[1].resize_mode) == ("img", "msk", 2)
    with pytest.raises(BadRequest, match="control_mode 'loud'"):
        parse_units({"args": [{"model": "m", "control_mode": "loud"}]})
    with pytest.raises(BadRequest, match="guidance_start"):
        parse_units({"args": [{"model": "m", "guidance_start": 0.8, "guidance_end": 0.2}]})


def test_preprocessors_and_geometry(tmp_path) -> None:  # noqa: ANN001
    img = np.asarray(hint_image((80, 60)))
    canny = preprocessors.run("canny", img, 120)
    assert canny.shape == (120, 160, 3) and set(np.unique(canny)) <= {0, 255} and canny.max() == 255
    assert np.array_equal(preprocessors.run("invert", img, 60), 255 - img)  # short side already 60
    for name in preprocessors.WEIGHT_FREE:
        assert preprocessors.run(name, img, 64).dtype == np.uint8
    assert preprocessors.run("tile_resample", img, 60, 2.0).shape[:2] == (30, 40)
    with pytest.raises(Unsupported, match="available: none, canny"):
        preprocessors.check("magic", tmp_path)
    with pytest.raises(Unsupported, match="openpose' needs body_pose_model.pth"):
        preprocessors.check("openpose", tmp_path)
    assert fit(img, 64, 64, 1).shape == (64, 64, 3) and fit(img, 64, 64, 2)[0].sum() == 0  # filled bars
    assert pixel_perfect_resolution((80, 60), (64, 64), 1) == 64


def test_sdxl_controlnet(tmp_path) -> None:  # noqa: ANN001
    from sdcloud.settings import Settings

    eng = Engine(Settings(data_dir=tmp_path))
    eng.load_model("demo-xl")
    fixtures.save_controlnet(eng.settings.models_root / "ControlNet" / "xl_canny.safetensors", eng.pipeline.unet,
                             "diffusers", seed=3)
    fixtures.save_controlnet(eng.settings.models_root / "ControlNet" / "xl_depth.safetensors", eng.pipeline.unet,
                             "diffusers", seed=4)
    base = eng.generate(req(steps=2))
    unit = ControlUnit(module="canny", model="xl_canny", image=hint_image())
    one = eng.generate(req(steps=2, controlnet=[unit]))
    assert np.abs(arr(one) - arr(base)).mean() > 0.5
    second = ControlUnit(module="blur_gaussian", model="xl_depth", image=hint_image((96, 64)), weight=0.8,
                         control_mode=1, threshold_a=4.0)
    both = eng.generate(req(steps=2, controlnet=[unit, second]))  # several units at once on SDXL
    assert np.abs(arr(both) - arr(one)).mean() > 0.5
    params = parse_infotext(both.infotexts[0])
    assert params["ControlNet 1"].startswith("Module: blur_gaussian, Model: xl_depth, Weight: 0.8")
    assert "Threshold A: 4, " in params["ControlNet 1"] and "My prompt is more important" in params["ControlNet 1"]


def test_weight_based_modules_name_the_missing_files_and_folder(tmp_path) -> None:  # noqa: ANN001
    annotators = tmp_path / "annotators"
    with pytest.raises(Unsupported) as err:
        preprocessors.check("lineart_realistic", annotators)
    msg = str(err.value)
    # the folder relative to the data dir, never the server's absolute path (issue 19)
    assert "sk_model.pth" in msg and "models/ControlNet/annotators/lineart/" in msg and "\n" not in msg
    assert str(tmp_path) not in msg and "GET /controlnet/module_list" in msg
    with pytest.raises(Unsupported, match="body_pose_model.pth, hand_pose_model.pth, facenet.pth"):
        preprocessors.check("openpose", annotators)
    assert "lineart_realistic" not in preprocessors.module_names(annotators)
    if preprocessors.aux_error() is not None:  # here: controlnet_aux needs torchvision, absent beside CPU torch
        for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
            (annotators / "openpose").mkdir(parents=True, exist_ok=True)
            (annotators / "openpose" / name).write_bytes(b"x")
        with pytest.raises(Unsupported, match="openpose' runs through controlnet_aux, which cannot be imported"):
            preprocessors.check("openpose", annotators)
        assert "openpose" not in preprocessors.module_names(annotators)


def test_lineart_and_hed_annotators_from_user_files(tmp_path) -> None:  # noqa: ANN001
    annotators = tmp_path / "annotators"
    fixtures.save_annotator(annotators / "lineart" / "sk_model.pth", "lineart", seed=1)  # extension layout
    fixtures.save_annotator(annotators / "ControlNetHED.pth", "hed", seed=2, scale=0.02)  # flat, as the HF repo
    names = preprocessors.module_names(annotators)
    assert {"lineart_realistic", "softedge_hed", "softedge_hedsafe"} <= set(names) and "lineart_coarse" not in names
    assert preprocessors.check("lineart", annotators) == "lineart_realistic"  # the extension's old name
    img = np.asarray(hint_image((96, 64)))
    line = preprocessors.run("lineart_realistic", img, 128, annotators=annotators)
    assert line.shape == (128, 192, 3) and line.dtype == np.uint8  # processor_res is the short side
    other = preprocessors.run("lineart_realistic", np.asarray(hint_image((96, 64)).rotate(90)), 128,
                              annotators=annotators)
    assert np.abs(line.astype(int) - other.astype(int)).mean() > 0.5  # follows the image
    soft = preprocessors.run("softedge_hed", img, 64, annotators=annotators)
    assert soft.shape == (64, 96, 3) and soft.std() > 0
    safe = preprocessors.run("softedge_hedsafe", img, 64, annotators=annotators)
    assert len(np.unique(safe)) <= 3  # quantised: 0, 127, 255
    # a file of another network under the expected name: one line naming it
    fixtures.save_annotator(annotators / "lineart" / "sk_model2.pth", "hed", seed=3)
    with pytest.raises(Unsupported, match=r"sk_model2.pth: not the lineart annotator") as err:
        preprocessors.run("lineart_coarse", img, 64, annotators=annotators)
    assert "\n" not in str(err.value)


def test_processor_res_and_thresholds_reach_the_detected_map() -> None:
    from sdcloud.controlnet.apply import LoadedUnit, detect

    soft = np.asarray(hint_image((80, 60)).filter(ImageFilter.GaussianBlur(3)))  # weak and strong gradients
    noise = np.random.default_rng(0).integers(0, 40, soft.shape)
    img = (soft.astype(int) * 0.8 + noise).clip(0, 255).astype(np.uint8)
    few = preprocessors.run("canny", img, 60, 250, 255)
    many = preprocessors.run("canny", img, 60, 20, 40)
    assert few.mean() < many.mean()  # low thresholds keep more edges
    maps = {}
    for res in (64, 256):
        unit = ControlUnit(module="canny", model="m", image=hint_image((80, 60)), processor_res=res)
        maps[res], _ = detect(LoadedUnit(unit, None, "m", unit.image, None), 64, 64, Path("."))
    assert maps[64].shape == maps[256].shape == (64, 64, 3) and not np.array_equal(maps[64], maps[256])
