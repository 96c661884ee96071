"""The UI's pure helpers: LoRA insertion, PNG-info → txt2img mapping, form → A1111 request."""

from __future__ import annotations

import pytest

from sdcloud.infotext import parse_infotext
from sdcloud.ui.params import (
    Ranges,
    fit_choices,
    img2img_request,
    infotext_of,
    infotext_to_txt2img,
    insert_lora,
    seed_of,
    txt2img_request,
)

SCHEDULERS = ["Automatic", "Uniform", "Karras", "Exponential"]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("", "<lora:detail:1>"),
    ("a cat", "a cat, <lora:detail:1>"),
    ("a cat,", "a cat, <lora:detail:1>"),
    ("a cat, ", "a cat, <lora:detail:1>"),
    ("a cat\n", "a cat, <lora:detail:1>"),
])
def test_insert_lora_appends_a1111_tag(prompt: str, expected: str) -> None:
    assert insert_lora(prompt, "detail") == expected


def test_insert_lora_keeps_weight_and_does_not_stack() -> None:
    assert insert_lora("a cat", "style", 0.6) == "a cat, <lora:style:0.6>"
    once = insert_lora("a cat <lora:detail:0.4>", "detail")
    assert once == "a cat <lora:detail:0.4>"  # the user's weight stays
    # a LoRA whose name is a prefix of another one is still added
    assert insert_lora("<lora:detail_v2:1>", "detail") == "<lora:detail_v2:1>, <lora:detail:1>"


def test_png_info_parameters_fill_txt2img_controls() -> None:
    text = ("a photo of a fox, <lora:detail:0.5>\nNegative prompt: blurry\n"
            "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1741860054, Size: 512x768, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1")
    out = infotext_to_txt2img(parse_infotext(text))
    keys = ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed", "width",
            "height")
    assert {k: out[k] for k in keys} == {
        "prompt": "a photo of a fox, <lora:detail:0.5>", "negative_prompt": "blurry", "steps": 28,
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 6.5, "seed": 1741860054,
        "width": 512, "height": 768,
    }
    assert "enable_hr" not in out and "batch_size" not in out  # not in the text: controls left alone
    assert not {"clip_skip", "model", "model_hash", "extra"} & set(out)  # no such txt2img control


def test_png_info_hires_fields_enable_hires_fix() -> None:
    text = ("x\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, "
            "Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 10, Hires upscaler: Latent (nearest)")
    out = infotext_to_txt2img(parse_infotext(text))
    assert out["enable_hr"] is True
    assert (out["hr_scale"], out["hr_upscaler"], out["hr_second_pass_steps"]) == (1.5, "Latent (nearest)", 10)
    assert (out["denoising_strength"], out["hr_resize_x"], out["hr_resize_y"]) == (0.4, 0, 0)


def test_png_info_values_are_fitted_to_the_sliders() -> None:
    text = "x\nSteps: 500, Sampler: Euler, CFG scale: 45, Seed: 5, Size: 4099x30, Batch size: 64"
    ranges = Ranges(max_width=2048, max_steps=150, max_batch_size=8)
    out = infotext_to_txt2img(parse_infotext(text), ranges=ranges)
    assert (out["steps"], out["width"], out["height"], out["cfg_scale"], out["batch_size"]) == (
        150, 2048, 64, 30.0, 8)


def test_fit_choices_drops_values_the_server_does_not_offer() -> None:
    kept, dropped = fit_choices({"sampler_name": "Restart", "steps": 20, "scheduler": "Karras"},
                                {"sampler_name": ["Euler", "DPM++ 2M"], "scheduler": SCHEDULERS})
    assert kept == {"steps": 20, "scheduler": "Karras"}
    assert dropped == {"sampler_name": "Restart"}


FORM = {"prompt": "a fox", "negative_prompt": "", "sampler_name": "Euler a", "scheduler": "Automatic",
        "steps": 4.0, "cfg_scale": 5, "width": 64.0, "height": 64.0, "seed": -1.0, "batch_size": 2.0,
        "n_iter": 1.0, "enable_hr": False, "hr_scale": 2.0, "hr_upscaler": "Latent",
        "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "denoising_strength": 0.7}


def test_txt2img_request_uses_a1111_fields_and_types() -> None:
    req = txt2img_request(FORM)
    assert req == {"prompt": "a fox", "negative_prompt": "", "sampler_name": "Euler a",
                   "scheduler": "Automatic", "steps": 4, "cfg_scale": 5.0, "width": 64, "height": 64,
                   "seed": -1, "batch_size": 2, "n_iter": 1, "save_images": True}
    assert all(type(req[k]) is int for k in ("steps", "width", "height", "seed", "batch_size", "n_iter"))


def test_txt2img_request_sends_hires_only_when_enabled() -> None:
    req = txt2img_request({**FORM, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.3})
    assert (req["enable_hr"], req["hr_scale"], req["hr_upscaler"], req["denoising_strength"]) == (
        True, 1.5, "Latent", 0.3)
    assert txt2img_request({**FORM, "seed": 1234.0})["seed"] == 1234
    assert txt2img_request({**FORM, "seed": None})["seed"] == -1


def test_img2img_request_maps_inpaint_radio_labels() -> None:
    form = {**FORM, "resize_mode": "Crop and resize", "denoising_strength": 0.5, "mask_blur": 8,
            "mask_mode": "Inpaint not masked", "inpainting_fill": "latent noise",
            "inpaint_area": "Only masked", "inpaint_full_res_padding": 16}
    plain = img2img_request(form, "INIT")
    assert plain["init_images"] == ["INIT"] and plain["resize_mode"] == 1
    assert plain["denoising_strength"] == 0.5
    assert "mask" not in plain and "enable_hr" not in plain
    inpaint = img2img_request(form, "INIT", "MASK")
    assert {k: inpaint[k] for k in ("mask", "mask_blur", "inpainting_fill", "inpaint_full_res",
                                    "inpaint_full_res_padding", "inpainting_mask_invert")} == {
        "mask": "MASK", "mask_blur": 8, "inpainting_fill": 2, "inpaint_full_res": True,
        "inpaint_full_res_padding": 16, "inpainting_mask_invert": 1}


def test_seed_and_infotext_follow_the_selected_gallery_image() -> None:
    info = {"seed": 10, "all_seeds": [10, 11, 12], "infotexts": ["a", "b", "c"], "index_of_first_image": 0}
    assert [seed_of(info, i) for i in (0, 2)] == [10, 12]
    assert infotext_of(info, 1) == "b"
    grid = {**info, "index_of_first_image": 1, "infotexts": ["grid", "a", "b", "c"]}
    assert seed_of(grid, 1) == 10  # the grid comes first; image 1 is the first seed
    assert seed_of(None) == -1 and infotext_of({}, 3) == ""
