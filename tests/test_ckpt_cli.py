"""`sdcloud ckpt ...` end to end on synthetic checkpoints: inspect, hash, convert, prune, merge."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdcloud.checkpoints.layouts import ema_name
from sdcloud.cli import main
from test_ckpt_synthetic import synthetic_state, write_synthetic

POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--data-dir", os.environ.get("SDCLOUD_TEST_DATA", "/nonexistent-sdcloud"), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDCLOUD_TEST_DATA", str(tmp_path / "data"))


def test_inspect_reports_architecture_components_and_hashes(tmp_path: Path, capsys) -> None:
    path = write_synthetic(tmp_path / "m.safetensors", ema=True, metadata={"ss_note": "hi"})
    code, out, _ = _run(capsys, "ckpt", "inspect", str(path), "--hash", "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["architecture"] == "SD 1.x" and rep["prediction"] == "epsilon"
    assert rep["has_ema"] and rep["has_vae"] and rep["has_text_encoder"]
    assert rep["dtypes"]["F16"] > 0 and rep["dtypes"]["I64"] == 77 and rep["dtypes"]["F32"] == 1001
    assert rep["metadata"] == {"ss_note": "hi"}
    assert rep["hashes"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rep["hashes"]["short"] == rep["hashes"]["sha256"][:10]


def test_inspect_unknown_model_gives_the_evidence(tmp_path: Path, capsys) -> None:
    path = tmp_path / "flux.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(4)}, str(path))
    code, out, _ = _run(capsys, "ckpt", "inspect", str(path), "--json")
    rep = json.loads(out)
    assert code == 0 and rep["architecture"] == "unknown" and "Flux" in rep["evidence"][0]


def test_hash_matches_a1111_definitions(tmp_path: Path, capsys) -> None:
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.randn(600_000)}, str(path))  # > 2 MiB so AutoV1 exists
    code, out, _ = _run(capsys, "ckpt", "hash", str(path), "--json")
    row = json.loads(out)["files"][0]
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert code == 0
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["short"] == row["sha256"][:10]
    assert row["autov1"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert row["addnet"] == hashlib.sha256(data[8 + n:]).hexdigest()


def test_convert_refuses_a_malicious_pickle_with_a_message(tmp_path: Path, capsys) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    src = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(2)}, "e": Evil()}, src)
    code, _, err = _run(capsys, "ckpt", "convert", str(src))
    assert code == 1 and err.startswith("sdcloud: evil.ckpt: refusing") and "system" in err
    assert "Traceback" not in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.safetensors").exists()


def test_convert_ckpt_keeps_every_tensor(tmp_path: Path, capsys) -> None:
    sd = synthetic_state(seed=3)
    src = tmp_path / "m.ckpt"
    torch.save({"state_dict": sd, "global_step": 10}, src)
    code, out, _ = _run(capsys, "ckpt", "convert", str(src))
    assert code == 0 and "wrote" in out
    got = load_file(str(tmp_path / "m.safetensors"))
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_prune_uses_ema_casts_and_fixes_clip_ids(tmp_path: Path, capsys) -> None:
    sd = synthetic_state(seed=4, dtype=torch.float32, ema=True)
    sd[POS] = torch.linspace(0, 75.9975, 77)[None]  # the classic float-corrupted ids
    sd["optimizer.exp_avg"] = torch.zeros(3)
    src = tmp_path / "trained.safetensors"
    save_file(sd, str(src))
    code, out, _ = _run(capsys, "ckpt", "prune", str(src), "--ema", "use", "--dtype", "fp16")
    assert code == 0
    got = load_file(str(tmp_path / "trained-pruned.safetensors"))
    assert torch.equal(got[POS], torch.arange(77)[None]) and got[POS].dtype == torch.int64
    assert torch.equal(got[KEY], sd[ema_name(KEY)].half())
    assert not any(k.startswith(("model_ema.", "optimizer.")) or k == "alphas_cumprod" for k in got)
    vae = "first_stage_model.decoder.conv_out.weight"
    assert got[vae].dtype == torch.float16 and torch.equal(got[vae], sd[vae].half())


def test_merge_and_lora_bake_commands(tmp_path: Path, capsys) -> None:
    a = write_synthetic(tmp_path / "a.safetensors", seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "ab.safetensors"
    code, stdout, _ = _run(capsys, "ckpt", "merge", str(a), str(b), "-o", str(out), "--alpha", "0.3",
                           "--dtype", "fp32")
    assert code == 0 and "SD 1.x" in stdout
    fa, fb, got = load_file(str(a)), load_file(str(b)), load_file(str(out))
    torch.testing.assert_close(got[KEY], 0.7 * fa[KEY].float() + 0.3 * fb[KEY].float())
    code, _, err = _run(capsys, "ckpt", "merge", str(a), str(b), "-o", str(out))
    assert code == 1 and "already exists" in err
    lora = tmp_path / "l.safetensors"
    save_file({"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.ones(1, 8, 3, 3),
               "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.ones(8, 1, 1, 1)}, str(lora))
    code, stdout, _ = _run(capsys, "ckpt", "lora-bake", str(a), "--lora", f"{lora}:0.5", "--dtype", "fp32")
    assert code == 0 and "1 modules" in stdout
    baked = load_file(str(tmp_path / "a-lora.safetensors"))
    torch.testing.assert_close(baked[KEY], fa[KEY].float() + 0.5)  # rank 1, no alpha: scale 1


def test_ckpt_help_does_not_import_torch() -> None:
    code = ("import sys; from sdcloud.cli import main\n"
            "try:\n    main(['ckpt', 'merge', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_merge_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    """A disk that fills up mid-merge. A full filesystem cannot be made here without mounting
    one, so the writes answer ENOSPC the way the kernel does once 64 KiB are in: ``os.write``
    for the ``O_DIRECT`` path, the buffered sink's file write where ``O_DIRECT`` is missing."""
    import errno

    from sdcloud.checkpoints import sink

    a = write_synthetic(tmp_path / "a.safetensors", seed=1)
    b = write_synthetic(tmp_path / "b.safetensors", seed=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written = {"n": 0}

    def filling(real):  # type: ignore[no-untyped-def]
        def write(*args):  # type: ignore[no-untyped-def]
            if written["n"] + len(args[-1]) > 1 << 16:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written["n"] += len(args[-1])
            return real(*args)
        return write

    monkeypatch.setattr(os, "write", filling(os.write))
    monkeypatch.setattr(sink.BufferedSink, "write", filling(sink.BufferedSink.write))
    for buffered in (False, True):
        if buffered:
            monkeypatch.delattr(os, "O_DIRECT")
        written["n"] = 0
        code, stdout, err = _run(capsys, "ckpt", "merge", str(a), str(b), "-o", str(out_dir / "m.safetensors"))
        assert code == 1, stdout
        assert err.startswith("sdcloud: no space left for m.safetensors") and err.count("\n") == 1, err
        assert list(out_dir.iterdir()) == []  # no final file, no .partial
