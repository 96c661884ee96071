"""A1111 infotext: exact text, parsing of real A1111 strings, round trips, image storage."""

from __future__ import annotations

import io

import piexif
import piexif.helper
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sdcloud import __version__
from sdcloud.errors import CorruptFile
from sdcloud.image_files import exif_for, pnginfo_for, read_image_infotext
from sdcloud.infotext import (
    VERSION,
    build_infotext,
    generation_params,
    infotext_to_request_fields,
    parse_infotext,
    parse_name_hashes,
    split_sampler_name,
)

A1111_110 = (
    "a photo of a cat\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1741860054, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)
A1111_LEGACY = (
    "masterpiece, 1girl\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, Clip skip: 2, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.4, Hires upscale: 1.5, "
    'Hires upscaler: 4x-UltraSharp, Lora hashes: "detail_tweaker: e3f9c2b1a8d7"'
)


def _basic_params(**over: object) -> dict[str, object]:
    kwargs: dict = dict(
        steps=20,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7.0,
        seed=42,
        width=512,
        height=768,
        model_hash="6ce0161689",
        model="v1-5-pruned-emaonly",
    )
    kwargs.update(over)
    return generation_params(**kwargs)


# ----------------------------------------------------------------------------- build


def test_build_matches_a1111_text_exactly() -> None:
    text = build_infotext("a cat, in a hat", "blurry", _basic_params())
    assert text == (
        "a cat, in a hat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
        f"Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: sdcloud-{__version__}"
    )


def test_build_without_negative_prompt_has_no_negative_line() -> None:
    text = build_infotext("a cat", "", {"Steps": 20, "Seed": 1, "Size": "8x8"})
    assert text == "a cat\nSteps: 20, Seed: 1, Size: 8x8"


def test_build_quotes_values_with_comma_colon_newline_and_skips_none() -> None:
    params = {
        "Steps": 5,
        "Hires prompt": 'a, "b"',
        "Lora hashes": "x: 0123456789ab",
        "Note": "two\nlines",
        "Plain": "héllo wörld",
        "Missing": None,
        "Tiling": "Tiling",
    }
    text = build_infotext("p", "", params)
    assert text.splitlines()[1:] == [
        'Steps: 5, Hires prompt: "a, \\"b\\"", Lora hashes: "x: 0123456789ab", '
        'Note: "two\\nlines", Plain: héllo wörld, Tiling'
    ]


def test_build_strips_surrounding_whitespace() -> None:
    assert build_infotext("  ", "", {"Steps": 1}) == "Steps: 1"


def test_version_is_not_a_parseable_release_for_a1111() -> None:
    # A1111 turns on legacy behaviour for parseable versions below 1.8 (see docs/infotext.md).
    assert VERSION == f"sdcloud-{__version__}"
    parsed = parse_infotext(build_infotext("[a:b:0.5]", "", _basic_params()))
    assert "Old prompt editing timelines" not in parsed
    assert "Downcast alphas_cumprod" not in parsed


def test_generation_params_key_order_and_omissions() -> None:
    params = _basic_params(
        vae_hash="abcdef0123",
        vae="vae-ft-mse.safetensors",
        variation_seed=7,
        variation_seed_strength=0.3,
        seed_resize_from=(640, 480),
        denoising_strength=0.5,
        clip_skip=2,
        hires_upscale=2.0,
        hires_steps=10,
        hires_upscaler="Latent",
        hires_sampler="Euler a",
        hires_schedule_type="Automatic",
        hires_prompt="sharp, detailed",
        hires_negative_prompt="noise",
        lora_hashes={"detail": "e3f9c2b1a8d7", "style: v2, final": "0123456789ab"},
        ti_hashes={"easyneg": "aabbccddeeff"},
        extra={"Emphasis": "No norm"},
    )
    assert list(params) == [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model hash",
        "Model",
        "VAE hash",
        "VAE",
        "Variation seed",
        "Variation seed strength",
        "Seed resize from",
        "Denoising strength",
        "Clip skip",
        "Hires upscale",
        "Hires steps",
        "Hires upscaler",
        "Hires sampler",
        "Hires schedule type",
        "Hires prompt",
        "Hires negative prompt",
        "Lora hashes",
        "TI hashes",
        "Emphasis",
        "Version",
    ]
    assert params["Seed resize from"] == "640x480"
    assert params["Lora hashes"] == "detail: e3f9c2b1a8d7, style v2 final: 0123456789ab"  # names cleaned
    line = build_infotext("p", "", params).splitlines()[-1]
    assert 'Lora hashes: "detail: e3f9c2b1a8d7, style v2 final: 0123456789ab"' in line
    assert 'Hires prompt: "sharp, detailed"' in line


def test_generation_params_leaves_out_defaults_like_a1111() -> None:
    params = _basic_params(
        clip_skip=1, variation_seed=5, variation_seed_strength=0.0, seed_resize_from=(0, 0)
    )
    for label in ("Clip skip", "Variation seed", "Variation seed strength", "Seed resize from", "Tiling"):
        assert label not in params
    assert "Hires resize" not in params and "Mask blur" not in params


def test_generation_params_hires_resize_replaces_upscale() -> None:
    params = _basic_params(hires_upscale=2.0, hires_resize=(1024, 1536), denoising_strength=0.7)
    assert "Hires upscale" not in params
    assert params["Hires resize"] == "1024x1536"


@pytest.mark.parametrize(
    ("fill", "full_res", "invert", "expected"),
    [
        (1, False, False, {"Mask blur": 4}),
        (
            0,
            True,
            True,
            {
                "Mask blur": 4,
                "Masked content": "fill",
                "Inpaint area": "Only masked",
                "Masked area padding": 16,
                "Mask mode": "Inpaint not masked",
            },
        ),
        (2, False, False, {"Mask blur": 4, "Masked content": "latent noise"}),
    ],
)
def test_generation_params_inpaint_fields(fill: int, full_res: bool, invert: bool, expected: dict) -> None:
    params = _basic_params(
        denoising_strength=0.75,
        mask_blur=4,
        inpainting_fill=fill,
        inpaint_full_res=full_res,
        inpaint_full_res_padding=16,
        inpainting_mask_invert=invert,
    )
    mask_keys = {k: v for k, v in params.items() if k in expected or k.startswith(("Mask", "Inpaint"))}
    assert mask_keys == expected
    fields = infotext_to_request_fields(parse_infotext(build_infotext("p", "", params)))
    assert fields["inpainting_fill"] == fill
    assert fields["inpaint_full_res"] is full_res
    assert fields["inpainting_mask_invert"] == int(invert)
    assert fields["mask_blur"] == 4


# ----------------------------------------------------------------------------- parse real A1111 text


def test_parse_a1111_110_infotext() -> None:
    parsed = parse_infotext(A1111_110)
    assert parsed["Prompt"] == "a photo of a cat"
    assert parsed["Negative prompt"] == "blurry"
    assert parsed["Steps"] == "20"
    assert parsed["Sampler"] == "DPM++ 2M"
    assert parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "7"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "512")
    assert "Size" not in parsed
    assert parsed["Model hash"] == "6ce0161689"
    assert parsed["Version"] == "v1.10.1"
    # defaults A1111 injects
    assert parsed["Clip skip"] == "1"
    assert parsed["Hires sampler"] == "Use same sampler"
    assert parsed["Masked area padding"] == "32"
    assert parsed["RNG"] == "GPU"
    assert "Downcast alphas_cumprod" not in parsed  # 1.10 needs no back-compat flags

    fields = infotext_to_request_fields(parsed)
    assert fields["prompt"] == "a photo of a cat"
    assert fields["negative_prompt"] == "blurry"
    assert (fields["steps"], fields["cfg_scale"], fields["seed"]) == (20, 7.0, 1741860054)
    assert (fields["width"], fields["height"]) == (512, 512)
    assert (fields["sampler_name"], fields["scheduler"]) == ("DPM++ 2M", "Karras")
    assert fields["model"] == "v1-5-pruned-emaonly" and fields["model_hash"] == "6ce0161689"
    assert fields["clip_skip"] == 1
    assert "enable_hr" not in fields
    assert fields["extra"] == {"Version": "v1.10.1"}


def test_parse_pre_19_infotext_with_legacy_sampler_and_hires() -> None:
    parsed = parse_infotext(A1111_LEGACY)
    assert parsed["Prompt"] == "masterpiece, 1girl"
    assert parsed["Negative prompt"] == ""
    assert parsed["Lora hashes"] == "detail_tweaker: e3f9c2b1a8d7"
    assert parse_name_hashes(parsed["Lora hashes"]) == {"detail_tweaker": "e3f9c2b1a8d7"}
    assert parse_name_hashes("a: 0123456789ab, b c: ba9876543210") == {
        "a": "0123456789ab",
        "b c": "ba9876543210",
    }
    fields = infotext_to_request_fields(parsed)
    assert (fields["sampler_name"], fields["scheduler"]) == ("DPM++ 2M", "Karras")
    assert fields["clip_skip"] == 2
    assert fields["denoising_strength"] == 0.4
    assert fields["enable_hr"] is True
    assert fields["hr_scale"] == 1.5
    assert fields["hr_upscaler"] == "4x-UltraSharp"
    assert (fields["hr_resize_x"], fields["hr_resize_y"]) == (0, 0)
    assert fields["hr_sampler_name"] is None and fields["hr_checkpoint_name"] is None
    assert (fields["width"], fields["height"]) == (512, 768)
    assert fields["extra"]["Lora hashes"] == "detail_tweaker: e3f9c2b1a8d7"


def test_parse_multiline_prompts_and_whitespace() -> None:
    text = (
        "  first line, (red:1.2)  \n\nsecond line\n"
        "Negative prompt: bad hands,\n  ugly\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 5.5, Seed: 3, Size: 768x512, Model: sdxl"
    )
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "first line, (red:1.2)\n\nsecond line"
    assert parsed["Negative prompt"] == "bad hands,\nugly"
    assert parsed["Sampler"] == "Euler a"
    assert parsed["Emphasis"] == "Original"  # A1111 marks prompts that use weights
    fields = infotext_to_request_fields(parsed)
    assert (fields["sampler_name"], fields["scheduler"]) == ("Euler a", "Automatic")
    assert fields["extra"] == {"Emphasis": "Original"}


def test_last_line_with_fewer_than_three_params_is_prompt_text() -> None:
    parsed = parse_infotext("a cat\nstyle: watercolor, mood: calm")
    assert parsed["Prompt"] == "a cat\nstyle: watercolor, mood: calm"
    assert "style" not in parsed and "Steps" not in parsed
    assert parse_infotext("")["Prompt"] == ""


def test_parse_only_negative_prompt() -> None:
    parsed = parse_infotext(build_infotext("", "lowres", {"Steps": 3, "Seed": 9, "Size": "64x64"}))
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Seed"]) == ("", "lowres", "9")


def test_parse_hires_resize_and_hires_prompts() -> None:
    text = (
        "castle\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 5, "
        "Size: 512x512, Denoising strength: 0.55, Hires resize: 1024x1024, Hires steps: 12, "
        "Hires upscaler: Latent (nearest), "
        'Hires sampler: DPM++ SDE, Hires schedule type: Exponential, Hires prompt: "castle, detailed", '
        "Hires checkpoint: other [0123456789], Version: v1.10.1"
    )
    fields = infotext_to_request_fields(parse_infotext(text))
    assert fields["enable_hr"] is True
    assert (fields["hr_resize_x"], fields["hr_resize_y"]) == (1024, 1024)
    assert fields["hr_second_pass_steps"] == 12
    assert fields["hr_upscaler"] == "Latent (nearest)"
    assert (fields["hr_sampler_name"], fields["hr_scheduler"]) == ("DPM++ SDE", "Exponential")
    assert fields["hr_prompt"] == "castle, detailed"
    assert fields["hr_negative_prompt"] == ""
    assert fields["hr_checkpoint_name"] == "other [0123456789]"


def test_img2img_denoising_alone_does_not_enable_hires() -> None:
    text = "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.75"
    fields = infotext_to_request_fields(parse_infotext(text))
    assert fields["denoising_strength"] == 0.75
    assert "enable_hr" not in fields


def test_seed_resize_and_variation_fields() -> None:
    text = (
        "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Variation seed: 99, "
        "Variation seed strength: 0.25, Seed resize from: 640x384"
    )
    fields = infotext_to_request_fields(parse_infotext(text))
    assert (fields["subseed"], fields["subseed_strength"]) == (99, 0.25)
    assert (fields["seed_resize_from_w"], fields["seed_resize_from_h"]) == (640, 384)


def test_old_versions_get_a1111_backcompat_flags() -> None:
    old = "[a:b:0.5]\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 512x512, Version: v1.5.1"
    parsed = parse_infotext(old)
    assert parsed["Old prompt editing timelines"] == "True"
    assert parsed["Pad conds v0"] == "True"
    assert parsed["Downcast alphas_cumprod"] == "True"
    mid = parse_infotext(old.replace("v1.5.1", "v1.7.0-224-gabcdef"))
    assert "Old prompt editing timelines" not in mid and mid["Downcast alphas_cumprod"] == "True"
    assert "Downcast alphas_cumprod" not in parse_infotext(old.replace("v1.5.1", "v1.7.0-225-gabcdef"))
    forge = parse_infotext(old.replace("v1.5.1", "f2.0.1v1.10.1-previous-669-gdfdcbab6"))
    assert "Downcast alphas_cumprod" not in forge


def test_old_first_pass_size_is_converted() -> None:
    text = "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 1024x768, First pass size: 0x0"
    parsed = parse_infotext(text)
    # ~512x512 pixels at 4:3: scale sqrt(512*512/(1024*768)) = 0.577; 591 -> 640, 443 -> 448
    assert (parsed["Size-1"], parsed["Size-2"]) == ("640", "448")
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == ("1024", "768")


def test_hypernet_label_becomes_a_prompt_tag() -> None:
    text = "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Hypernet: anime, Hypernet strength: 0.6"
    assert parse_infotext(text)["Prompt"] == "x<hypernet:anime:0.6>"


def test_empty_values_are_dropped_like_a1111() -> None:
    parsed = parse_infotext("x\nSteps: 20, Hires prompt: , Foo: , Seed: 1, Size: 8x8")
    assert "Foo" not in parsed
    assert parsed["Hires prompt"] == ""  # the injected default
    assert (parsed["Steps"], parsed["Seed"]) == ("20", "1")


def test_bad_values_are_kept_as_text_not_fatal() -> None:
    text = "x\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Masked content: sideways, Foo: bar"
    fields = infotext_to_request_fields(parse_infotext(text))
    assert "steps" not in fields
    assert fields["extra"] == {"Steps": "many", "Masked content": "sideways", "Foo": "bar"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Heun Exponential", ("DPM++ 2M SDE Heun", "Exponential")),
        ("Euler a", ("Euler a", "Automatic")),
        ("DDIM", ("DDIM", "Automatic")),
        ("Euler SGMUniform", ("Euler", "SGM Uniform")),
        ("DPM++ 2M Align Your Steps", ("DPM++ 2M", "Align Your Steps")),
    ],
)
def test_split_legacy_sampler_names(name: str, expected: tuple[str, str]) -> None:
    assert split_sampler_name(name) == expected


# ----------------------------------------------------------------------------- round trip

_line = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=40,
).map(str.strip)
# Lines as A1111 keeps them: stripped, none starting with the negative-prompt marker.
_prompt = (
    st.lists(_line.filter(lambda ln: not ln.startswith("Negative prompt:")), min_size=1, max_size=3)
    .map("\n".join)
    .map(str.strip)
)
_tricky_text = st.sampled_from(["", "a, b", "x: y", 'q "u" o', "multi\nline", "ünï, cødé: ✓", "plain"])


@settings(max_examples=150, deadline=None)
@given(
    prompt=_prompt,
    negative=_prompt,
    steps=st.integers(1, 150),
    cfg=st.floats(1, 30, allow_nan=False).map(lambda f: round(f, 2)),
    seed=st.integers(0, 2**32 - 1),
    size=st.tuples(st.integers(1, 256).map(lambda x: x * 8), st.integers(1, 256).map(lambda x: x * 8)),
    clip_skip=st.integers(1, 12),
    sampler=st.sampled_from(["Euler a", "DPM++ 2M", "DPM++ SDE", "DDIM"]),
    schedule=st.sampled_from(["Automatic", "Karras", "Exponential", "SGM Uniform"]),
    hires_prompt=_tricky_text,
    model=st.sampled_from(["v1-5-pruned-emaonly", "sd_xl_base_1.0", "my model, v2: final"]),
)
def test_build_parse_round_trip(
    prompt: str,
    negative: str,
    steps: int,
    cfg: float,
    seed: int,
    size: tuple[int, int],
    clip_skip: int,
    sampler: str,
    schedule: str,
    hires_prompt: str,
    model: str,
) -> None:
    params = generation_params(
        steps=steps,
        sampler=sampler,
        schedule_type=schedule,
        cfg_scale=cfg,
        seed=seed,
        width=size[0],
        height=size[1],
        model_hash="0123456789",
        model=model,
        clip_skip=clip_skip,
        denoising_strength=0.5,
        hires_upscale=1.5,
        hires_upscaler="Latent",
        hires_prompt=hires_prompt or None,
        lora_hashes={"a, b": "0123456789ab", "c": "ba9876543210"},
    )
    fields = infotext_to_request_fields(parse_infotext(build_infotext(prompt, negative, params)))
    assert fields["prompt"] == prompt
    assert fields["negative_prompt"] == negative
    assert (fields["steps"], fields["cfg_scale"], fields["seed"]) == (steps, cfg, seed)
    assert (fields["width"], fields["height"]) == size
    assert fields["clip_skip"] == clip_skip
    assert (fields["sampler_name"], fields["scheduler"]) == (sampler, schedule)
    assert fields["model"] == model
    assert fields["hr_prompt"] == hires_prompt
    assert (fields["enable_hr"], fields["hr_scale"], fields["denoising_strength"]) == (True, 1.5, 0.5)
    assert fields["extra"]["Lora hashes"] == "a b: 0123456789ab, c: ba9876543210"
    assert fields["extra"]["Version"] == VERSION


# ----------------------------------------------------------------------------- images

_TEXT_LATIN = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 1, Size: 64x64"
_TEXT_UNICODE = "猫, (kawaii:1.2) 🐱\nSteps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 1, Size: 64x64"


def _png_chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


@pytest.mark.parametrize(("text", "chunk"), [(_TEXT_LATIN, b"tEXt"), (_TEXT_UNICODE, b"iTXt")])
def test_png_parameters_chunk_round_trip(text: str, chunk: bytes) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=pnginfo_for(text))
    data = buf.getvalue()
    assert chunk in _png_chunk_types(data)
    assert read_image_infotext(data) == text
    with Image.open(io.BytesIO(data)) as img:
        assert img.info["parameters"] == text  # where A1111 reads it
        assert read_image_infotext(img) == text


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_round_trip(fmt: str, tmp_path) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (8, 8)).save(path, fmt, exif=exif_for(_TEXT_UNICODE))
    assert read_image_infotext(path) == _TEXT_UNICODE
    with Image.open(path) as img:
        raw = img.getexif().get_ifd(0x8769)[0x9286]
    assert raw == b"UNICODE\0" + _TEXT_UNICODE.encode("utf-16-be")


def test_image_without_infotext_reads_none() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert read_image_infotext(buf.getvalue()) is None


def test_gif_comment_is_read() -> None:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF", comment=_TEXT_LATIN.encode())
    assert read_image_infotext(buf.getvalue()) == _TEXT_LATIN


def test_not_an_image_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CorruptFile, match="send a PNG, JPEG or WEBP"):
        read_image_infotext(b"not an image")
    path = tmp_path / "cut.png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=pnginfo_for(_TEXT_LATIN))
    path.write_bytes(buf.getvalue()[:20])
    with pytest.raises(CorruptFile):
        read_image_infotext(path)


def test_exif_ascii_user_comment_is_read() -> None:
    exif = bytearray(exif_for("xx"))
    # same layout, ASCII prefix: what some other tools write
    body = b"ASCII\0\0\0" + b"hi".ljust(4, b" ")
    exif = exif[: -len(b"UNICODE\0" + "xx".encode("utf-16-be"))] + body
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=bytes(exif))
    assert read_image_infotext(buf.getvalue()) == "hi  "


def test_a1111_exif_reader_decodes_our_jpeg(tmp_path) -> None:
    # A1111 reads JPEG/WEBP infotext with piexif: piexif.load + UserComment.load.
    path = tmp_path / "x.jpg"
    Image.new("RGB", (8, 8)).save(path, "JPEG", exif=exif_for(_TEXT_UNICODE))
    with Image.open(path) as img:
        exif = piexif.load(img.info["exif"])
    comment = exif["Exif"][piexif.ExifIFD.UserComment]
    assert piexif.helper.UserComment.load(comment) == _TEXT_UNICODE


def test_we_read_a1111_written_jpeg(tmp_path) -> None:
    # What A1111 writes: piexif.dump of a UserComment dumped with encoding="unicode".
    exif = piexif.dump(
        {
            "Exif": {
                piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(_TEXT_UNICODE, encoding="unicode")
            }
        }
    )
    path = tmp_path / "a1111.jpg"
    Image.new("RGB", (8, 8)).save(path, "JPEG", exif=exif)
    assert read_image_infotext(path) == _TEXT_UNICODE


def test_module_imports_without_torch_or_pil() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sdcloud.infotext, sdcloud.prompt_syntax;"
        "bad = [m for m in ('torch', 'diffusers', 'PIL') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- linear-time scanner

_A1111_PARAM = __import__("re").compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
"""A1111's own parameters regex (quadratic on long colon-free text): the reference the scanner
must agree with on every input small enough for it to be fast."""


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet='ab _-/:,"\\\n\t\u00e91\u3000', max_size=24))
def test_scanner_matches_a1111s_regex_exactly(line: str) -> None:
    from sdcloud.infotext import _params

    assert _params(line) == _A1111_PARAM.findall(line)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab -/", min_size=1, max_size=8),
                          st.text(alphabet='ab ,:"\\x', max_size=10)), max_size=6))
def test_scanner_matches_a1111s_regex_on_parameter_lines(pairs: list[tuple[str, str]]) -> None:
    from sdcloud.infotext import _params

    line = ", ".join(f"{k}: {v}" for k, v in pairs)
    assert _params(line) == _A1111_PARAM.findall(line)


# ----------------------------------------------------------------------------- numbers as A1111 writes them


def test_whole_floats_are_written_without_point_zero_like_a1111() -> None:
    """A1111's UI writes ``CFG scale: 7``, ``Hires upscale: 2``: whole floats lose their ``.0``;
    others keep their digits."""
    params = _basic_params(cfg_scale=7.0, denoising_strength=0.7, hires_upscale=2.0, hires_steps=10,
                           hires_upscaler="Latent", variation_seed=3, variation_seed_strength=1.0)
    line = build_infotext("a cat", "", params).splitlines()[-1]
    for part in ("CFG scale: 7,", "Denoising strength: 0.7,", "Hires upscale: 2,", "Hires steps: 10,",
                 "Variation seed strength: 1,"):
        assert part in line, part
    assert ".0," not in line
    line = build_infotext("a cat", "", _basic_params(cfg_scale=6.5, denoising_strength=0.0,
                                                     hires_upscale=1.5)).splitlines()[-1]
    assert "CFG scale: 6.5," in line and "Denoising strength: 0," in line and "Hires upscale: 1.5," in line
    # not numbers: unchanged (True stays True, text stays text)
    assert build_infotext("p", "", {"Steps": 5, "Tiling": True, "Note": "7.0"}).endswith(
        "Steps: 5, Tiling: True, Note: 7.0")


def test_whole_number_infotext_round_trips_through_png_and_request_fields() -> None:
    text = build_infotext("a cat", "dog", _basic_params(cfg_scale=7.0, denoising_strength=0.7,
                                                        hires_upscale=2.0, hires_upscaler="Latent"))
    assert "CFG scale: 7," in text
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=pnginfo_for(text))
    read = read_image_infotext(buf.getvalue())
    assert read == text
    fields = infotext_to_request_fields(parse_infotext(read))
    assert fields["cfg_scale"] == 7.0 and isinstance(fields["cfg_scale"], float)
    assert fields["hr_scale"] == 2.0 and fields["denoising_strength"] == 0.7 and fields["enable_hr"] is True
    # built again from what was read: the same text
    again = generation_params(
        steps=fields["steps"], sampler=fields["sampler_name"], schedule_type=fields["scheduler"],
        cfg_scale=fields["cfg_scale"], seed=fields["seed"], width=fields["width"], height=fields["height"],
        model_hash=fields["model_hash"], model=fields["model"], denoising_strength=fields["denoising_strength"],
        hires_upscale=fields["hr_scale"], hires_upscaler=fields["hr_upscaler"])
    assert build_infotext("a cat", "dog", again) == text


def test_face_restoration_goes_after_the_seed_as_in_a1111() -> None:
    from sdcloud.infotext import add_param

    text = build_infotext("a face, (smile:1.2)", "bad", generation_params(
        steps=20, sampler="Euler a", schedule_type="Automatic", cfg_scale=7, seed=123, width=512, height=512,
        model="m", lora_hashes={"a": "1", "b": "2"}, version="v1.10.1"))
    out = add_param(text, "Face restoration", "CodeFormer", after="Seed")
    assert out.splitlines()[:2] == text.splitlines()[:2]
    assert ("Seed: 123, Face restoration: CodeFormer, Size: 512x512, Model: m, "
            'Lora hashes: "a: 1, b: 2", Version: v1.10.1') in out.splitlines()[2]
    assert parse_infotext(out)["Face restoration"] == "CodeFormer"
    assert add_param(out, "Face restoration", "GFPGAN", after="Seed") == out  # already there
    assert add_param("just a prompt", "Face restoration", "GFPGAN", after="Seed") == "just a prompt"
    no_seed = "x\nSteps: 2, Sampler: Euler, Size: 8x8, Version: v1"
    assert add_param(no_seed, "Face restoration", "GFPGAN", after="Seed") == \
        "x\nSteps: 2, Sampler: Euler, Size: 8x8, Face restoration: GFPGAN, Version: v1"
