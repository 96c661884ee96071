"""LyCORIS (LoCon with Tucker core, LoHa, LoKr, full diff) in ``<lora:...>`` at generation, the
math matching A1111's Lora extension, and networks that are missing or broken being skipped
with a warning (as A1111) instead of failing the job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdcloud.checkpoints.lycoris import NetworkModule, module_delta
from sdcloud.engine.engine import Engine
from sdcloud.engine.network_patch import diffusers_to_ldm, module_index
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import Unsupported
from sdcloud.infotext import parse_infotext


def g(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


def test_loha_lokr_full_and_tucker_math() -> None:
    w1a, w1b, w2a, w2b = g(6, 2), g(2, 5, seed=1), g(6, 2, seed=2), g(2, 5, seed=3)
    loha = NetworkModule("m", {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                               "alpha": torch.tensor(1.0)})
    delta, bias = module_delta(loha, (6, 5))
    assert bias is None and torch.allclose(delta, (w1a @ w1b) * (w2a @ w2b) * 0.5)  # alpha 1 / rank 2

    k1, k2a, k2b = g(2, 3), g(3, 2, seed=4), g(2, 4, seed=5)
    lokr = NetworkModule("m", {"lokr_w1": k1, "lokr_w2_a": k2a, "lokr_w2_b": k2b, "alpha": torch.tensor(4.0)})
    delta, _ = module_delta(lokr, (6, 12))
    assert torch.allclose(delta, torch.kron(k1, k2a @ k2b) * 2.0)  # alpha 4 / rank 2
    whole = NetworkModule("m", {"lokr_w1": k1, "lokr_w2": g(3, 4, seed=6)})
    assert torch.allclose(module_delta(whole, (6, 12))[0], torch.kron(k1, g(3, 4, seed=6)))  # no rank: scale 1

    diff, diff_b = g(4, 3), g(4)
    delta, bias = module_delta(NetworkModule("m", {"diff": diff, "diff_b": diff_b}), (4, 3))
    assert torch.equal(delta, diff) and torch.equal(bias, diff_b)

    up, down, mid = g(8, 2, 1, 1), g(2, 3, 1, 1, seed=7), g(2, 2, 3, 3, seed=8)
    tucker = NetworkModule("m", {"lora_up.weight": up, "lora_down.weight": down, "lora_mid.weight": mid})
    delta, _ = module_delta(tucker, (8, 3, 3, 3))
    expected = torch.zeros(8, 3, 3, 3)
    for i in range(8):
        for j in range(3):
            expected[i, j] = sum(up[i, n, 0, 0] * down[m, j, 0, 0] * mid[n, m] for n in range(2) for m in range(2))
    assert torch.allclose(delta, expected, atol=1e-5)

    with pytest.raises(Unsupported, match="does not fit"):
        module_delta(loha, (5, 6, 1))
    with pytest.raises(Unsupported, match="OFT"):
        module_delta(NetworkModule("m", {"oft_blocks": g(2, 2)}), (2, 2))


def test_ldm_names_round_trip_with_the_bake_mapping(engine: Engine) -> None:
    from sdcloud.checkpoints.lora_bake import _ldm_to_diffusers

    names = [n for n, m in engine.pipeline.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    up_attn = {int(n.split(".")[1]) for n in names if n.startswith("up_blocks.") and ".attentions." in n}
    converted = 0
    for name in names:
        ldm = diffusers_to_ldm(name, up_attn)
        if ldm and ldm.startswith(("input_blocks", "middle_block", "output_blocks")) and ldm != "input_blocks.0.0":
            assert _ldm_to_diffusers(ldm) == name, (name, ldm)
            converted += 1
    assert converted > 20


def _targets(engine: Engine) -> dict[str, tuple[int, ...]]:
    index = module_index(engine.pipeline)
    picks = ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
             "lora_unet_up_blocks_1_resnets_0_conv1", "lora_te_text_model_encoder_layers_0_mlp_fc1"]
    return {k: tuple(index[k].weight.shape) for k in picks}


def _loha_file(path: Path, targets: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for i, (name, shape) in enumerate(targets.items()):
        out, inner = shape[0], int(np.prod(shape[1:]))
        for part, s in (("hada_w1_a", (out, 2)), ("hada_w1_b", (2, inner)), ("hada_w2_a", (out, 2)),
                        ("hada_w2_b", (2, inner))):
            tensors[f"{name}.{part}"] = g(*s, seed=i) * 0.5
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(path))
    return tensors


def req(prompt: str) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=64, height=64, steps=2, seed=11, sampler_name="Euler")


def arr(r: object) -> np.ndarray:
    return np.asarray(r.images[0]).astype(np.int16)  # type: ignore[attr-defined]


def test_loha_changes_the_image_like_its_full_diff_and_comes_off_again(engine: Engine) -> None:
    folder = engine.settings.lora_path
    folder.mkdir(parents=True, exist_ok=True)
    targets = _targets(engine)
    tensors = _loha_file(folder / "style_loha.safetensors", targets)
    full = {}
    for name, shape in targets.items():
        module = NetworkModule(name, {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(name + ".")})
        full[f"{name}.diff"] = module_delta(module, shape)[0]
    save_file(full, str(folder / "style_full.safetensors"))
    base = arr(engine.generate(req("a house")))
    with_loha = engine.generate(req("a house <lora:style_loha:0.8>"))
    assert np.abs(arr(with_loha) - base).mean() > 0.5
    assert "style_loha" in parse_infotext(with_loha.infotexts[0])["Lora hashes"]
    with_full = engine.generate(req("a house <lora:style_full:0.8>"))
    assert np.abs(arr(with_full) - arr(with_loha)).max() <= 1  # same delta, two file formats
    assert np.array_equal(arr(engine.generate(req("a house"))), base)  # weights restored
    assert np.array_equal(arr(engine.generate(req("a house <lora:style_loha:0>"))), base)


def test_lokr_file_applies(engine: Engine) -> None:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    out, inner = _targets(engine)[name]
    save_file({f"{name}.lokr_w1": g(2, 2), f"{name}.lokr_w2_a": g(out // 2, 2, seed=1),
               f"{name}.lokr_w2_b": g(2, inner // 2, seed=2), f"{name}.alpha": torch.tensor(1.0)},
              str(engine.settings.lora_path / "kron.safetensors"))
    base = arr(engine.generate(req("a tree")))
    assert np.abs(arr(engine.generate(req("a tree <lora:kron:1>"))) - base).mean() > 0.1


def test_missing_and_broken_networks_are_skipped_with_a_warning(engine: Engine) -> None:
    folder = engine.settings.lora_path
    save_file({"lora_unet_nowhere.hada_w1_a": g(2, 2), "lora_unet_nowhere.hada_w1_b": g(2, 2),
               "lora_unet_nowhere.hada_w2_a": g(2, 2), "lora_unet_nowhere.hada_w2_b": g(2, 2)},
              str(folder / "for_other_model.safetensors"))
    base = engine.generate(req("a boat"))
    r = engine.generate(req("a boat <lora:not_here:1> <lora:for_other_model:1>"))
    assert np.array_equal(arr(r), arr(base))
    params = parse_infotext(r.infotexts[0])
    assert params["Networks not found"] == "not_here, for_other_model"
    assert r.info["comments"] == "Networks not found: not_here, for_other_model\n"
    assert "comments" not in parse_infotext(base.infotexts[0]) and base.info["comments"] == ""


def test_embedding_for_another_model_is_skipped(engine: Engine) -> None:
    folder = engine.settings.embeddings_path
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, str(folder / "xlonly.safetensors"))
    engine.catalog.refresh()  # the server does this on /refresh-embeddings
    r = engine.generate(req("a cat, xlonly"))
    assert r.images and "Textual inversion embeddings skipped: xlonly" in r.info["comments"]
