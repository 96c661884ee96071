"""The UI's refiner and hires-pass controls: the form → A1111 request fields, PNG Info's
infotext → the controls (checkpoint names as A1111 writes them matched to the dropdown's
titles), and the controls in the built page with their Japanese labels."""

from __future__ import annotations

import pytest

from sdcloud.infotext import parse_infotext
from sdcloud.ui.i18n import JA, english
from sdcloud.ui.params import (
    NO_REFINER,
    SAME_CHECKPOINT,
    SAME_SAMPLER,
    SAME_SCHEDULER,
    img2img_request,
    infotext_to_txt2img,
    match_checkpoint,
    txt2img_request,
)

FORM = {"prompt": "a fox", "steps": 4, "width": 64, "height": 64, "seed": 3}


def test_form_sends_the_hires_and_refiner_fields() -> None:
    plain = txt2img_request(FORM)
    assert "refiner_checkpoint" not in plain and "hr_checkpoint_name" not in plain
    assert "refiner_checkpoint" not in txt2img_request({**FORM, "refiner_checkpoint": NO_REFINER})
    req = txt2img_request({**FORM, "enable_hr": True, "hr_checkpoint_name": "other.safetensors [0123456789]",
                           "hr_sampler_name": "DPM++ 2M", "hr_scheduler": SAME_SCHEDULER, "hr_prompt": "a dog",
                           "hr_negative_prompt": "", "refiner_checkpoint": "xl-refiner.safetensors",
                           "refiner_switch_at": 0.7})
    assert req["hr_checkpoint_name"] == "other.safetensors [0123456789]" and req["hr_sampler_name"] == "DPM++ 2M"
    assert req["hr_scheduler"] == SAME_SCHEDULER and req["hr_prompt"] == "a dog"
    assert (req["refiner_checkpoint"], req["refiner_switch_at"]) == ("xl-refiner.safetensors", 0.7)
    # img2img has the refiner too (A1111's accordion is on both tabs), not the hires fields
    i2i = img2img_request({**FORM, "enable_hr": True, "hr_prompt": "x", "refiner_checkpoint": "r",
                           "refiner_switch_at": 0.5}, "aW1n")
    assert i2i["refiner_checkpoint"] == "r" and "hr_prompt" not in i2i


def test_png_info_fills_the_controls() -> None:
    text = ("a fox\nNegative prompt: blur\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, "
            "Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: Latent, Hires checkpoint: other [0123456789], "
            "Hires sampler: DPM++ 2M, Hires schedule type: Karras, Hires prompt: a dog, "
            "Refiner: xl-refiner [abcdef0123], Refiner switch at: 0.8, Version: v1.10.1")
    values = infotext_to_txt2img(parse_infotext(text))
    assert values["hr_checkpoint_name"] == "other [0123456789]"
    assert (values["hr_sampler_name"], values["hr_scheduler"], values["hr_prompt"]) == ("DPM++ 2M", "Karras", "a dog")
    assert (values["refiner_checkpoint"], values["refiner_switch_at"]) == ("xl-refiner [abcdef0123]", 0.8)
    bare = infotext_to_txt2img(parse_infotext("a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 512x512, "
                                              "Denoising strength: 0.5, Hires upscale: 2"))
    # A1111's defaults for labels left out: the first pass's checkpoint and sampler
    assert (bare["hr_checkpoint_name"], bare["hr_sampler_name"], bare["hr_scheduler"]) == (
        SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER)
    assert bare["refiner_checkpoint"] == NO_REFINER  # no "Refiner" label: the refiner is turned off


def test_match_checkpoint_finds_the_dropdown_title() -> None:
    titles = ["sdxl/base.safetensors [1111111111]", "other.safetensors [0123456789]", "demo", "demo-xl"]
    assert match_checkpoint("other [0123456789]", titles) == "other.safetensors [0123456789]"
    assert match_checkpoint("base", titles) == "sdxl/base.safetensors [1111111111]"
    assert match_checkpoint("demo-xl", titles) == "demo-xl"
    assert match_checkpoint("missing [0000000000]", titles) is None


@pytest.mark.parametrize("label", ["Hires checkpoint", "Hires sampling method", "Hires schedule type",
                                   "Hires prompt", "Hires negative prompt", "Refiner", "Switch at"])
def test_new_labels_have_japanese(label: str) -> None:
    assert JA[label]


def test_controls_are_in_the_page(tmp_path: object) -> None:
    from sdcloud.api.services import Services
    from sdcloud.runtime import Runtime
    from sdcloud.settings import Settings
    from sdcloud.ui.app import build_ui

    settings = Settings.load({"data_dir": tmp_path, "model": "demo"}, env={})
    config = build_ui(Services(Runtime(settings))).get_config_file()
    by_id = {c["props"].get("elem_id"): c["props"] for c in config["components"]}
    for elem in ("txt2img_hr_checkpoint", "txt2img_hr_sampler", "txt2img_hr_scheduler", "txt2img_hr_prompt",
                 "txt2img_refiner_checkpoint", "txt2img_refiner_switch_at", "img2img_refiner_checkpoint"):
        assert elem in by_id, elem
    refiner = by_id["txt2img_refiner_checkpoint"]
    assert english(refiner["label"]) == "Checkpoint"
    assert [c[0] for c in refiner["choices"]][:1] == [NO_REFINER] and "demo-xl" in [c[0] for c in refiner["choices"]]
    assert by_id["txt2img_refiner_switch_at"]["value"] == 0.8


def test_token_counter_counts_the_longest_and_part() -> None:
    from sdcloud.ui.token_count import count_tokens

    long_part = ", ".join(["red fox"] * 30)  # 89 tokens: two chunks
    assert count_tokens(f"a cat AND {long_part}:0.5") == count_tokens(long_part)
    assert count_tokens("a cat AND a dog") == count_tokens("a cat")  # each part is encoded on its own
