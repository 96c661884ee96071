"""Streaming merge: each method equals its formula computed by a naive full-load reference."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
from sdcloud.checkpoints.merge_methods import dare_mask
from sdcloud.errors import BadRequest, CorruptFile, Unsupported
from test_ckpt_synthetic import TINY_SD15, TINY_SDXL, synthetic_state, write_synthetic

POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
UNET_KEY = "model.diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"
TEXT_KEY = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
VAE_KEY = "first_stage_model.decoder.conv_out.weight"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "a": write_synthetic(d / "a.safetensors", seed=1, ema=True,
                             metadata={"sd_merge_recipe": json.dumps({"type": "webui"})}),
        "b": write_synthetic(d / "b.safetensors", seed=2),
        "c": write_synthetic(d / "c.safetensors", seed=3),
    }


def _full(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def _naive(method: str, a, b, c, alpha: float, key: str) -> torch.Tensor:
    """Textbook formulas on whole tensors, written independently of merge_methods."""
    if method == "weighted_sum":
        return (1 - alpha) * a + alpha * b
    if method == "add_difference":
        return a + alpha * (b - c)
    if method == "train_difference":
        dist = (b - a).abs()
        denom = dist + (b - c).abs()
        return a + 1.8 * alpha * (b - c) * torch.nan_to_num(dist / denom)
    if method == "ties":
        def trim(t: torch.Tensor) -> torch.Tensor:
            k = max(1, round(0.3 * t.numel()))
            cut = t.abs().flatten().sort(descending=True).values[k - 1]
            return t * (t.abs() >= cut)
        ta, tb = trim(a - c), trim(b - c)
        elected = torch.sign(ta + tb)
        sel_a = (torch.sign(ta) == elected) & (ta != 0)
        sel_b = (torch.sign(tb) == elected) & (tb != 0)
        n = sel_a.float() + sel_b.float()
        merged = (ta * sel_a + tb * sel_b) / torch.where(n == 0, 1.0, n)
        return c + alpha * merged
    assert method == "dare"
    m = dare_mask(tuple(a.shape), 0.3, 7, key)
    return a + alpha * m * (b - c) / 0.7


@pytest.mark.parametrize("method", ["weighted_sum", "add_difference", "train_difference", "ties", "dare"])
def test_each_method_equals_its_formula(models, tmp_path: Path, method: str) -> None:
    three = method != "weighted_sum"
    out = tmp_path / "m.safetensors"
    res = merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], c=models["c"] if three else None,
                                         output=out, method=method, alpha=0.4, density=0.3,
                                         drop_rate=0.3, seed=7, dtype="fp32"))
    a, b, c, got = _full(models["a"]), _full(models["b"]), _full(models["c"]), _full(out)
    merged_keys = [k for k in got if k.startswith(("model.diffusion_model.", "cond_stage_model."))
                   and k != POS]
    assert len(merged_keys) > 300
    for k in merged_keys:
        want = _naive(method, a[k], b[k], c[k], 0.4, k)
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-5, msg=f"{method} {k}")
    # never merged: position ids, A's VAE, schedule buffers; EMA dropped
    assert got[POS].dtype == torch.int64 and torch.equal(got[POS], torch.arange(77)[None])
    assert torch.equal(got[VAE_KEY], a[VAE_KEY])
    assert torch.equal(got["alphas_cumprod"], a["alphas_cumprod"])
    assert not any(k.startswith("model_ema.") for k in got)
    assert res.hashes.sha256 == __import__("hashlib").sha256(out.read_bytes()).hexdigest()


def test_fp16_output_and_a1111_metadata(models, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out, alpha=0.25, custom_name="mix"))
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor(UNET_KEY).dtype == torch.float16
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["interp_method"] == "Weighted sum" and recipe["multiplier"] == 0.25
    assert recipe["save_as_half"] is True and recipe["custom_name"] == "mix"
    import hashlib

    sha_a = hashlib.sha256(models["a"].read_bytes()).hexdigest()
    assert recipe["primary_model_hash"] == sha_a
    merged_models = json.loads(meta["sd_merge_models"])
    assert merged_models[sha_a]["name"] == "a.safetensors"
    assert merged_models[sha_a]["sd_merge_recipe"] == {"type": "webui"}  # A's own recipe carried
    a, b, got = _full(models["a"]), _full(models["b"]), _full(out)
    want = (0.75 * a[UNET_KEY] + 0.25 * b[UNET_KEY]).half().float()
    torch.testing.assert_close(got[UNET_KEY], want, rtol=0, atol=2e-3)


def test_block_weights_apply_per_block(models, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    weights = ["0.1"] + ["0"] * 5 + ["1"] + ["0"] * 19  # BASE=0.1, IN05=1, all else 0
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out, dtype="fp32",
                                   block_weights=",".join(weights)))
    a, b, got = _full(models["a"]), _full(models["b"]), _full(out)
    torch.testing.assert_close(got[UNET_KEY], b[UNET_KEY])  # IN05 fully B
    other = "model.diffusion_model.output_blocks.3.0.in_layers.2.weight"
    torch.testing.assert_close(got[other], a[other])
    torch.testing.assert_close(got[TEXT_KEY], 0.9 * a[TEXT_KEY] + 0.1 * b[TEXT_KEY])
    # supermerger-style names give the same result
    out2 = tmp_path / "m2.safetensors"
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out2, dtype="fp32", alpha=0.0,
                                   block_weights="BASE=0.1, IN05=1"))
    got2 = _full(out2)
    assert got2.keys() == got.keys()
    assert all(torch.equal(got2[k], got[k]) for k in got)


def test_sdxl_uses_20_block_weights(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "xa.safetensors", TINY_SDXL, seed=1)
    b = write_synthetic(tmp_path / "xb.safetensors", TINY_SDXL, seed=2)
    out = tmp_path / "x.safetensors"
    with pytest.raises(BadRequest, match="needs 20"):
        merge_checkpoints(MergeOptions(a=a, b=b, output=out, block_weights=",".join(["0.5"] * 26)))
    assert not out.exists()
    weights = ["0"] * 20
    weights[19] = "1"  # OUT08, which also holds the final out.* layers
    merge_checkpoints(MergeOptions(a=a, b=b, output=out, dtype="fp32", block_weights=",".join(weights)))
    fa, fb, got = _full(a), _full(b), _full(out)
    for k in ("model.diffusion_model.out.2.weight",
              "model.diffusion_model.output_blocks.8.0.skip_connection.weight"):
        torch.testing.assert_close(got[k], fb[k])
    pos = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
    assert got[pos].dtype == torch.int64
    torch.testing.assert_close(got["conditioner.embedders.1.model.ln_final.weight"],
                               fa["conditioner.embedders.1.model.ln_final.weight"])


def test_keep_text_encoder_bake_vae_and_drop_vae(models, tmp_path: Path) -> None:
    vae_sd = {k[len("first_stage_model."):]: v.clone() + 1 for k, v in synthetic_state(seed=9).items()
              if k.startswith("first_stage_model.")}
    vae_sd["loss.logvar"] = torch.zeros(())
    vae = tmp_path / "vae.safetensors"
    save_file(vae_sd, str(vae))
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out, dtype="fp32",
                                   keep_a_text_encoder=True, bake_vae=vae))
    a, got = _full(models["a"]), _full(out)
    torch.testing.assert_close(got[TEXT_KEY], a[TEXT_KEY])
    torch.testing.assert_close(got[VAE_KEY], vae_sd["decoder.conv_out.weight"].float())
    assert "loss.logvar" not in got and "first_stage_model.loss.logvar" not in got
    out2 = tmp_path / "novae.safetensors"
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out2, vae="none"))
    assert not any(k.startswith("first_stage_model.") for k in _full(out2))


def test_inpainting_a_with_normal_b_merges_the_shared_channels(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "inp.safetensors", replace(TINY_SD15, in_channels=9), seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    c = write_synthetic(tmp_path / "c.safetensors", seed=3)
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=a, b=b, c=c, output=out, method="add_difference", alpha=1.0,
                                   dtype="fp32"))
    k = "model.diffusion_model.input_blocks.0.0.weight"
    fa, fb, fc, got = _full(a), _full(b), _full(c), _full(out)
    torch.testing.assert_close(got[k][:, :4], fa[k][:, :4] + fb[k] - fc[k])
    torch.testing.assert_close(got[k][:, 4:], fa[k][:, 4:])
    with pytest.raises(BadRequest, match="A must be the inpainting model"):
        merge_checkpoints(MergeOptions(a=b, b=a, output=tmp_path / "x.safetensors"))


def test_ckpt_inputs_are_streamed_through_the_safe_loader(models, tmp_path: Path) -> None:
    ckpt = tmp_path / "b.ckpt"
    torch.save({"state_dict": load_file(str(models["b"]))}, ckpt)
    out = tmp_path / "m.safetensors"
    merge_checkpoints(MergeOptions(a=models["a"], b=ckpt, output=out, dtype="fp32", alpha=0.5))
    a, b, got = _full(models["a"]), _full(models["b"]), _full(out)
    torch.testing.assert_close(got[UNET_KEY], 0.5 * a[UNET_KEY] + 0.5 * b[UNET_KEY])


def _no_output(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_mixed_architectures_are_refused_before_writing(models, tmp_path: Path) -> None:
    xl = write_synthetic(tmp_path / "xl.safetensors", TINY_SDXL)
    out = tmp_path / "m.safetensors"
    with pytest.raises(BadRequest, match="SDXL base.*architectures differ"):
        merge_checkpoints(MergeOptions(a=models["a"], b=xl, output=out))
    _no_output(tmp_path, out)


def test_shape_mismatch_is_refused_not_broadcast(models, tmp_path: Path) -> None:
    wider = write_synthetic(tmp_path / "w.safetensors", replace(TINY_SD15, ch=16))
    out = tmp_path / "m.safetensors"
    with pytest.raises(BadRequest, match="same shapes"):
        merge_checkpoints(MergeOptions(a=models["a"], b=wider, output=out))
    _no_output(tmp_path, out)


def test_truncated_input_is_refused_cleanly(models, tmp_path: Path) -> None:
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(models["b"].read_bytes()[:-100])
    out = tmp_path / "m.safetensors"
    with pytest.raises(CorruptFile, match="truncated"):
        merge_checkpoints(MergeOptions(a=models["a"], b=bad, output=out))
    _no_output(tmp_path, out)


def test_header_lying_about_offsets_is_refused(models, tmp_path: Path) -> None:
    raw = models["b"].read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    lo, hi = header[first]["data_offsets"]
    header[first]["data_offsets"] = [lo + 2, hi + 2]  # overlaps its neighbour
    body = json.dumps(header).encode()
    bad = tmp_path / "liar.safetensors"
    bad.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + n:])
    out = tmp_path / "m.safetensors"
    with pytest.raises(CorruptFile):
        merge_checkpoints(MergeOptions(a=models["a"], b=bad, output=out))
    _no_output(tmp_path, out)


def test_failure_mid_write_leaves_no_file(models, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out), progress=progress)
    _no_output(tmp_path, out)


def test_dare_is_seeded_and_drops_the_requested_fraction(models, tmp_path: Path) -> None:
    outs = []
    for i, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"d{i}.safetensors"
        merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=out, method="dare",
                                       drop_rate=0.8, seed=seed, dtype="fp32"))
        outs.append(_full(out))
    key = "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"
    assert torch.equal(outs[0][key], outs[1][key])
    assert not torch.equal(outs[0][key], outs[2][key])
    kept = (outs[0][key] != _full(models["a"])[key]).float().mean().item()
    assert 0.1 < kept < 0.3


def test_progress_covers_input_hashing_and_writing(models, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    merge_checkpoints(MergeOptions(a=models["a"], b=models["b"], output=tmp_path / "m.safetensors"),
                      progress=lambda done, total: calls.append((done, total)))
    dones = [d for d, _ in calls]
    total = calls[0][1]
    assert all(t == total for _, t in calls) and dones == sorted(dones) and dones[-1] == total
    hashed = models["a"].stat().st_size + models["b"].stat().st_size
    assert total > hashed and any(d >= hashed for d in dones[:-1])


def test_old_nai_style_clip_keys_are_matched_like_a1111(models, tmp_path: Path) -> None:
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in load_file(str(models["b"])).items()}
    b_old = tmp_path / "nai.safetensors"
    save_file(old, str(b_old))
    out = tmp_path / "m.safetensors"
    res = merge_checkpoints(MergeOptions(a=models["a"], b=b_old, output=out, dtype="fp32", alpha=0.5))
    assert res.missing_in_others == []
    a, b, got = _full(models["a"]), _full(models["b"]), _full(out)
    torch.testing.assert_close(got[TEXT_KEY], 0.5 * a[TEXT_KEY] + 0.5 * b[TEXT_KEY])


def test_a_lora_given_as_a_model_is_named(models, tmp_path: Path) -> None:
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, str(lora))
    with pytest.raises(Unsupported, match="style.safetensors: this file is a LoRA"):
        merge_checkpoints(MergeOptions(a=models["a"], b=lora, output=tmp_path / "m.safetensors"))
