"""The training issue's harder promises, each run for real on the demo models: SDXL gets both text
encoders and its size/crop conditioning, cached latents are reused by a later session, a kill in
the middle of a state save leaves nothing corrupt, a resume state for another model or dataset is
refused in one line, and captions in the wrong encoding are caught (Notepad's UTF-16 is read)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sdcloud.errors import BadRequest
from sdcloud.settings import Settings
from sdcloud.training.captions import CaptionEncodingError, read_caption
from sdcloud.training.config import TrainConfig
from sdcloud.training.dataset import scan_dataset
from sdcloud.training.state import StateDir
from sdcloud.training.trainer import Trainer, TrainingStopped, state_root, train
from training_data import make_dataset

FAST = dict(resolution=64, batch=2, rank=4, alpha=4, seed=1)


@pytest.mark.parametrize("train_te", [True, False])
def test_sdxl_trains_with_both_text_encoders_and_its_size_and_crop_conditioning(tmp_path: Path,
                                                                                train_te: bool) -> None:
    root = make_dataset(tmp_path / "ds", n=2)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(
        root / "5_sks cat" / "wide.png")  # 96x64: a wide bucket, scaled and centre-cropped
    cfg = TrainConfig(dataset=str(root), model="demo-xl", name="xl", steps=4, lr=1e-2, save_state_every=0,
                      train_text_encoder=train_te, bucket_reso_steps=8, min_bucket_reso=32, **FAST)
    trainer = Trainer(cfg, Settings(data_dir=tmp_path / "data"))
    calls: list[tuple[torch.Tensor, dict]] = []

    real_setup = trainer._setup

    def setup() -> None:
        real_setup()
        pipe = trainer.pipe
        pipe.unet.register_forward_pre_hook(
            lambda _m, args, kwargs: calls.append((args[2].detach(), kwargs["added_cond_kwargs"])), with_kwargs=True)

    trainer._setup = setup
    result = trainer.run()
    pipe = trainer.pipe
    te1, te2 = pipe.text_encoder.config, pipe.text_encoder_2.config
    assert len(calls) == 4
    for embeds, added in calls:
        # the penultimate hidden states of both encoders side by side, and the pooled output of the second
        assert embeds.shape[-1] == te1.hidden_size + te2.hidden_size
        assert added["text_embeds"].shape[-1] == te2.projection_dim
    rows = {tuple(int(v) for v in r) for _, added in calls for r in added["time_ids"]}
    report = scan_dataset(cfg)
    wide = next(i for i in report.images if i.path.name == "wide.png")
    bw, bh = wide.bucket
    assert (bw, bh) != (64, 64) and bw > bh
    wide_rows = [r for r in rows if r[:2] == (64, 96)]  # original (height, width)
    assert wide_rows, rows
    _, _, top, left, th, tw = wide_rows[0]
    assert (th, tw) == (bh, bw)  # the target size is the bucket
    assert top == (np.ceil(64 * max(bw / 96, bh / 64)) - bh) // 2 and left == 0  # the centre crop, in pixels
    assert (64, 64, 0, 0, 64, 64) in rows  # square images: no crop
    tensors = load_file(str(result.lora_path))
    if train_te:  # both encoders' LoRAs received gradients
        for prefix in ("lora_te1_", "lora_te2_"):
            ups = [v for k, v in tensors.items() if k.startswith(prefix) and k.endswith("lora_up.weight")]
            assert ups and any(float(v.float().abs().sum()) > 0 for v in ups), prefix
    else:
        assert not any(k.startswith("lora_te") for k in tensors)


def test_cached_latents_are_reused_by_a_later_session(tmp_path: Path, monkeypatch) -> None:
    from diffusers import AutoencoderKL

    root = make_dataset(tmp_path / "ds", n=4)  # 4 x 5 repeats: full batches of 2 (the demo UNet needs 2 at 64 px)
    settings = Settings(data_dir=tmp_path / "data")
    encoded: list[int] = []
    real = AutoencoderKL.encode

    def counting(self, x, *a, **k):  # noqa: ANN001, ANN202
        encoded.append(x.shape[0])
        return real(self, x, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    cfg = TrainConfig(dataset=str(root), model="demo", name="first", steps=2, save_state_every=0, **FAST)
    first = Trainer(cfg, settings)
    first.run()
    assert len(encoded) == 4
    cache = state_root(settings) / "latents"
    assert len(list(cache.rglob("*.safetensors"))) == 4
    encoded.clear()
    second = Trainer(cfg.replace(name="second"), settings)  # a later session on the same data dir
    second.run()
    assert encoded == []  # every latent came from the disk cache
    for a, b in zip(first.latents, second.latents, strict=True):
        assert torch.equal(a, b)
    img = root / "5_sks cat" / "0.png"  # an edited image is encoded again, the others are not
    Image.new("RGB", (64, 64), "blue").save(img)
    third = Trainer(cfg.replace(name="third"), settings)
    third.run()
    assert encoded == [1]
    assert not torch.equal(third.latents[0], first.latents[0])


def _cli(data: Path, dataset: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), "train", "lora", str(dataset),
            "--model", "demo", "--name", "mychar", "--steps", "8", "--rank", "4", "--alpha", "2", "--lr", "1e-2",
            "--resolution", "64", "--batch", "2", "--seed", "1", *extra]


def test_kill_9_in_the_middle_of_a_state_save_leaves_nothing_corrupt(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "ds")
    reference = train(TrainConfig(dataset=str(dataset), model="demo", name="mychar", steps=8, lr=1e-2,
                                  save_state_every=0, **dict(FAST, alpha=2)), Settings(data_dir=tmp_path / "ref"))
    data = tmp_path / "data"
    env = dict(os.environ, SDCLOUD_TEST_TRAIN_SAVE_DELAY="3")
    proc = subprocess.Popen(_cli(data, dataset, "--save-state-every", "2"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    state = data / ".sdcloud" / "train" / "mychar"
    half = state / ".step-000004.tmp" / "trainer.pt"  # the second save, stopped before its meta.json
    deadline = time.monotonic() + 300
    while not half.is_file():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lora_dir = data / "models" / "Lora"
    assert not (lora_dir / "mychar.safetensors").exists()
    states = StateDir(state_root(Settings(data_dir=data)), "mychar")
    assert [g.step for g in states.generations()] == [2]  # the half-written save is not a generation
    states.load(states.latest())  # and the complete one passes its checksums
    lora_dir.mkdir(parents=True, exist_ok=True)
    stale = lora_dir / ".mychar.safetensors.0badf00d.tmp"  # as a kill during the final write leaves it
    stale.write_bytes(b"half a lora")
    done = subprocess.run(_cli(data, dataset, "--save-state-every", "2", "--resume", "--json"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "{" in done.stdout, done.stdout + done.stderr[-2000:]
    assert json.loads(done.stdout[done.stdout.index("{"):])["resumed_from"] == 2
    assert not stale.exists() and not (state.exists() and list(state.glob(".step-*")))
    got, want = load_file(str(lora_dir / "mychar.safetensors")), load_file(str(reference.lora_path))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-3, atol=1e-5)


def test_resume_refuses_a_state_of_another_model_or_dataset_before_any_step(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    settings = Settings(data_dir=tmp_path / "data")
    cfg = TrainConfig(dataset=str(root), model="demo", name="mychar", steps=6, lr=1e-2, save_state_every=2, **FAST)
    stop = threading.Event()
    with pytest.raises(TrainingStopped):
        Trainer(cfg, settings, stop=stop, progress=lambda p: stop.set() if p.step == 2 else None).run()
    steps: list[int] = []
    with pytest.raises(BadRequest, match="made on the model 'demo', this run uses 'demo-xl'; resume with the same "
                                         "--model, or use --restart instead of --resume"):
        train(cfg.replace(model="demo-xl"), settings, resume=True, progress=lambda p: steps.append(p.step))
    Image.new("RGB", (64, 64), "green").save(root / "5_sks cat" / "new.png")
    with pytest.raises(BadRequest, match="the dataset changed since it was saved"):
        train(cfg, settings, resume=True, progress=lambda p: steps.append(p.step))
    assert set(steps) <= {0}  # refused before the first training step
    assert not settings.lora_path.exists() or not list(settings.lora_path.iterdir())
    states = StateDir(state_root(settings), "mychar")
    assert [g.step for g in states.generations()] == [2]  # the state is kept, untouched
    (root / "5_sks cat" / "new.png").unlink()
    assert train(cfg, settings, resume=True).resumed_from == 2


def test_caption_encodings(tmp_path: Path) -> None:
    notepad = tmp_path / "a.txt"
    notepad.write_bytes("猫, 赤い\r\n".encode("utf-16"))  # Windows Notepad's "Unicode": UTF-16 LE with a BOM
    assert read_caption(notepad) == "猫, 赤い"
    bom8 = tmp_path / "b.txt"
    bom8.write_bytes("\ufeffsks cat, red".encode())
    assert read_caption(bom8) == "sks cat, red"
    bare16 = tmp_path / "c.txt"
    bare16.write_bytes("sks cat".encode("utf-16-le"))  # no BOM: plain ASCII with NULs in between
    with pytest.raises(CaptionEncodingError, match="NUL bytes"):
        read_caption(bare16)
    euc = tmp_path / "d.txt"
    euc.write_bytes("赤い猫、座っている".encode("euc_jp"))
    with pytest.raises(CaptionEncodingError, match="is not UTF-8"):
        read_caption(euc)
