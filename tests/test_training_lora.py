"""LoRA training on the demo models: the loss falls, the file is a kohya LoRA that our engine loads,
and a run killed (kill -9) or stopped and resumed -- here or on a fresh box through S3 -- ends with
the same weights as an uninterrupted run."""

from __future__ import annotations

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
from safetensors import safe_open
from safetensors.torch import load_file

from sdcloud.checkpoints.hashing import compute_hashes
from sdcloud.engine.engine import Engine
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest, NotFound
from sdcloud.settings import Settings
from sdcloud.training.config import TrainConfig
from sdcloud.training.trainer import Trainer, TrainingStopped, train
from training_data import make_dataset

FAST = dict(resolution=64, batch=2, rank=4, alpha=4, seed=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "mychar")


def _img(engine: Engine, prompt: str, model: str) -> np.ndarray:
    req = GenerationRequest(prompt=prompt, model=model, seed=3, steps=2, width=64, height=64,
                            sampler_name="Euler")
    return np.asarray(engine.generate(req).images[0], dtype=np.int16)


def test_sd15_loss_falls_and_the_file_is_a_kohya_lora_our_engine_loads(dataset: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cfg = TrainConfig(dataset=str(dataset), model="demo", name="mychar", steps=30, lr=1e-2,
                      train_text_encoder=True, save_state_every=0, **FAST)
    result = train(cfg, settings)
    third = len(result.losses) // 3
    first, last = np.mean(result.losses[:third]), np.mean(result.losses[-third:])
    assert last < 0.85 * first, result.losses
    path = settings.lora_path / "mychar.safetensors"
    assert result.lora_path == path
    tensors = load_file(str(path))
    unet = {k for k in tensors if k.startswith("lora_unet_")}
    te = {k for k in tensors if k.startswith("lora_te_")}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in unet
    assert "lora_unet_up_blocks_3_attentions_2_proj_out.lora_up.weight" in unet  # 1x1 conv (SD1)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in te
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_down.weight" in te
    assert len(tensors) == len(unet) + len(te) and all(k.rsplit(".", 1)[0].endswith(("lora_down", "lora_up"))
                                                       or k.endswith(".alpha") for k in tensors)
    assert float(tensors["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"]) == 4.0
    down = tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"]
    assert down.shape[0] == 4
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert meta["ss_network_alpha"] == "4.0" and meta["ss_steps"] == "30" and meta["ss_seed"] == "1"
    assert meta["ss_resolution"] == "(64, 64)" and meta["ss_base_model_version"] == "sd_v1"
    assert '"sks cat": 4' in meta["ss_tag_frequency"] and meta["ss_num_train_images"] == "20"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["sshs_model_hash"] == compute_hashes(path).addnet  # A1111's LoRA hash, precomputed
    engine = Engine(settings)
    base = _img(engine, "sks cat", "demo")
    zero = _img(engine, "sks cat <lora:mychar:0>", "demo")
    one = _img(engine, "sks cat <lora:mychar:1>", "demo")
    assert np.abs(zero - base).max() <= 1
    assert np.abs(one - base).max() > 5


def test_sdxl_locon_both_text_encoders_and_ldm_key_names(dataset: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cfg = TrainConfig(dataset=str(dataset), model="demo-xl", name="xl", steps=30, lr=1e-2, network="locon",
                      train_text_encoder=True, save_state_every=0, **FAST)
    result = train(cfg, settings)
    assert np.mean(result.losses[-10:]) < 0.85 * np.mean(result.losses[:10]), result.losses
    path = settings.lora_path / "xl.safetensors"
    keys = set(load_file(str(path)))
    # kohya's SDXL LoRAs name UNet modules in the LDM/SGM layout
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_proj_in.lora_up.weight" in keys
    assert "lora_unet_output_blocks_5_1_transformer_blocks_0_ff_net_2.alpha" in keys
    assert "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight" in keys  # 3x3 conv (LoCon)
    assert "lora_unet_input_blocks_3_0_op.lora_down.weight" in keys  # downsampler
    assert "lora_unet_output_blocks_2_2_conv.lora_up.weight" in keys  # upsampler after attention
    assert "lora_unet_middle_block_2_out_layers_3.alpha" in keys
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in keys)
    assert not any(k.startswith(("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_te_")) for k in keys)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_network_args"] == '{"conv_dim": "4", "conv_alpha": "4"}'
    engine = Engine(settings)
    base = _img(engine, "sks cat", "demo-xl")
    assert np.abs(_img(engine, "sks cat <lora:xl:0>", "demo-xl") - base).max() <= 1
    assert np.abs(_img(engine, "sks cat <lora:xl:1>", "demo-xl") - base).max() > 5


def _cli(data: Path, dataset: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), "train", "lora", str(dataset),
            "--model", "demo", "--name", "mychar", "--steps", "16", "--rank", "4", "--alpha", "2", "--lr", "1e-2",
            "--resolution", "64", "--batch", "2", "--seed", "1", "--save-state-every", "4", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(str(path)).items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def uninterrupted(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("ref"))
    cfg = TrainConfig(dataset=str(dataset), model="demo", name="mychar", steps=16, lr=1e-2, save_state_every=4,
                      **dict(FAST, alpha=2))
    return _weights(train(cfg, settings).lora_path)


def test_kill_9_then_resume_equals_an_uninterrupted_run(dataset: Path, tmp_path: Path, uninterrupted) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, SDCLOUD_TEST_TRAIN_STEP_DELAY="0.4")
    proc = subprocess.Popen(_cli(data, dataset), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = data / ".sdcloud" / "train" / "mychar"
    deadline = time.monotonic() + 240
    while not (state / "step-000008" / "meta.json").is_file():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (data / "models" / "Lora" / "mychar.safetensors").exists()  # only the state, no half-made LoRA
    done = subprocess.run(_cli(data, dataset, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same(_weights(data / "models" / "Lora" / "mychar.safetensors"), uninterrupted)


def test_sigterm_saves_state_and_exits_without_a_lora(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, SDCLOUD_TEST_TRAIN_STEP_DELAY="0.3")
    proc = subprocess.Popen(_cli(data, dataset, "--save-state-every", "100"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = data / ".sdcloud" / "train" / "mychar"
    deadline = time.monotonic() + 240
    while not (data / ".sdcloud" / "train" / "latents").exists():  # cached latents: the steps begin
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped at step" in err and "--resume" in err and "Traceback" not in err
    gens = sorted(state.glob("step-*"))
    assert len(gens) == 1 and (gens[0] / "meta.json").is_file()
    assert not (data / "models" / "Lora" / "mychar.safetensors").exists()


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_state_on_s3_resumes_on_a_fresh_box(dataset: Path, tmp_path: Path, uninterrupted, s3_endpoint,
                                            monkeypatch) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir("train-state")
    from sdcloud.storage.stores import open_store

    cfg = TrainConfig(dataset=str(dataset), model="demo", name="mychar", steps=16, lr=1e-2, save_state_every=4,
                      **dict(FAST, alpha=2))
    stop = threading.Event()

    def stop_at_6(p) -> None:  # the cost meter's graceful stop / a cancel arrives during step 7
        if p.step == 6:
            stop.set()

    first_box = Settings(data_dir=tmp_path / "box1")
    with pytest.raises(TrainingStopped, match="stopped at step 6/16"):
        Trainer(cfg, first_box, store=open_store("s3://train-state/runs", s3_endpoint), progress=stop_at_6,
                stop=stop).run()
    assert not (first_box.lora_path / "mychar.safetensors").exists()
    store = open_store("s3://train-state/runs", s3_endpoint)
    assert "train/mychar/step-000006/meta.json" in store.list("train/mychar")
    fresh = Settings(data_dir=tmp_path / "box2")  # a new machine: empty data dir, same store
    result = train(cfg, fresh, resume=True, store=store)
    assert result.resumed_from == 6
    _assert_same(_weights(result.lora_path), uninterrupted)


def test_resume_refuses_other_options_and_missing_state(dataset: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cfg = TrainConfig(dataset=str(dataset), model="demo", name="mychar", steps=4, lr=1e-2, save_state_every=2,
                      **FAST)
    stop = threading.Event()
    with pytest.raises(TrainingStopped):
        Trainer(cfg, settings, stop=stop, progress=lambda p: stop.set() if p.step == 2 else None).run()
    with pytest.raises(BadRequest, match=r"unfinished run \(step 2\): add --resume to continue it, or --restart"):
        train(cfg, settings)  # forgetting --resume never throws the state away
    with pytest.raises(BadRequest, match="rank was 4, now 8"):
        train(cfg.replace(rank=8), settings, resume=True)
    with pytest.raises(NotFound, match="no saved training state for 'other'"):
        train(cfg.replace(name="other"), settings, resume=True)
    assert not settings.lora_path.exists() or not list(settings.lora_path.iterdir())


@pytest.mark.parametrize("options, meta", [
    (dict(v_prediction=True, min_snr_gamma=5.0, noise_offset=0.05, clip_skip=2, gradient_checkpointing=True,
          optimizer="Lion", lr=1e-4, scheduler="cosine", warmup_steps=1, grad_accum=2, shuffle_caption=True,
          keep_tokens=1, caption_dropout=0.1, train_text_encoder=True),
     {"ss_v_parameterization": "True", "ss_min_snr_gamma": "5.0", "ss_noise_offset": "0.05", "ss_clip_skip": "2",
      "ss_gradient_checkpointing": "True", "ss_gradient_accumulation_steps": "2", "ss_lr_scheduler": "cosine",
      "modelspec.prediction_type": "v"}),
    (dict(optimizer="Prodigy", lr=1.0, scheduler="constant_with_warmup", warmup_steps=2, save_every=2),
     {"ss_optimizer": "prodigyopt.prodigy.Prodigy(weight_decay=0.01)", "ss_lr_warmup_steps": "2"}),
])
def test_training_options_run_and_are_recorded(dataset: Path, tmp_path: Path, options: dict, meta: dict) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    cfg = TrainConfig(dataset=str(dataset), model="demo", name="opts", steps=4, save_state_every=0,
                      **dict(FAST, **{k: v for k, v in options.items() if k == "lr"}))
    cfg = cfg.replace(**{k: v for k, v in options.items() if k != "lr"})
    result = train(cfg, settings)
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    with safe_open(str(result.lora_path), framework="pt") as fh:
        got = fh.metadata()
    assert {k: got.get(k) for k in meta} == meta
    if cfg.gradient_checkpointing:  # checkpointed blocks still pass gradients to every UNet LoRA module
        ups = {k: v for k, v in load_file(str(result.lora_path)).items()
               if k.startswith("lora_unet_") and k.endswith("lora_up.weight")}
        assert ups and all(v.abs().sum() > 0 for v in ups.values())
    if cfg.save_every:
        assert (settings.lora_path / "opts-step000002.safetensors").is_file()


@pytest.mark.parametrize("model, algo, marker", [("demo", "loha", ".hada_w1_a"), ("demo-xl", "lokr", ".lokr_w1")])
def test_lycoris_networks_train_resume_and_are_named_for_a1111(dataset: Path, tmp_path: Path, model: str,
                                                               algo: str, marker: str) -> None:
    pytest.importorskip("lycoris")
    cfg = TrainConfig(dataset=str(dataset), model=model, name=algo, steps=6, lr=1e-2, network=algo,
                      save_state_every=3, train_text_encoder=True, **FAST)
    whole = train(cfg, Settings(data_dir=tmp_path / "a"))
    settings = Settings(data_dir=tmp_path / "b")
    stop = threading.Event()
    with pytest.raises(TrainingStopped):
        Trainer(cfg, settings, stop=stop, progress=lambda p: stop.set() if p.step == 3 else None).run()
    resumed = train(cfg, settings, resume=True)
    assert resumed.resumed_from == 3
    _assert_same(_weights(resumed.lora_path), _weights(whole.lora_path))
    keys = set(load_file(str(whole.lora_path)))
    assert any(k.startswith("lora_unet_") and k.endswith(marker) for k in keys)
    assert any(k.startswith("lora_te") for k in keys)
    with safe_open(str(whole.lora_path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_module"] == "lycoris.kohya" and f'"algo": "{algo}"' in meta["ss_network_args"]
    # our engine loads it (weight patching, as A1111): <lora:name:1> changes the image, :0 is the base
    engine = Engine(Settings(data_dir=tmp_path / "a"))
    base = _img(engine, "sks cat", model)
    one = engine.generate(GenerationRequest(prompt=f"sks cat <lora:{algo}:1>", model=model, seed=3, steps=2,
                                            width=64, height=64, sampler_name="Euler"))
    assert not one.info.get("comments"), one.info  # not skipped as "Networks not found"
    assert f"{algo}: " in one.infotexts[0]  # Lora hashes
    assert np.abs(np.asarray(one.images[0], dtype=np.int16) - base).max() > 5
    assert np.abs(_img(engine, f"sks cat <lora:{algo}:0>", model) - base).max() <= 1


def test_dreambooth_with_generated_class_images_writes_a_checkpoint_the_engine_loads(dataset: Path,
                                                                                      tmp_path: Path) -> None:
    data = tmp_path / "data"
    code = subprocess.run(
        [sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), "train", "dreambooth", str(dataset),
         "--model", "demo", "--name", "db", "--steps", "4", "--lr", "1e-3", "--resolution", "64", "--batch", "2",
         "--class-prompt", "a photo of a cat", "--num-class-images", "2", "--save-state-every", "2"],
        capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr[-2000:]
    assert "load it as --model db" in code.stderr
    classes = sorted((data / "train-class-images" / "db" / "1_a photo of a cat").glob("*.png"))
    assert len(classes) == 2
    ckpt = data / "models" / "Stable-diffusion" / "db.safetensors"
    with safe_open(str(ckpt), framework="pt") as fh:
        meta = fh.metadata()
        assert any(k.startswith("model.diffusion_model.") for k in fh.keys())
    assert meta["ss_num_reg_images"] == "2" and meta["ss_steps"] == "4"
    assert not (data / "models" / "Lora" / "db.safetensors").exists()
    engine = Engine(Settings(data_dir=data))
    base = _img(engine, "sks cat", "demo")
    tuned = _img(engine, "sks cat", "db")
    assert np.abs(tuned - base).max() > 5


def test_dreambooth_stopped_and_resumed_equals_uninterrupted(dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(dataset=str(dataset), model="demo", name="dbr", steps=4, lr=1e-3, mode="dreambooth",
                      save_state_every=2, **FAST)
    whole = train(cfg, Settings(data_dir=tmp_path / "a"))
    settings = Settings(data_dir=tmp_path / "b")
    stop = threading.Event()
    with pytest.raises(TrainingStopped):
        Trainer(cfg, settings, stop=stop, progress=lambda p: stop.set() if p.step == 2 else None).run()
    assert not (settings.checkpoints_path / "dbr.safetensors").exists()
    resumed = train(cfg, settings, resume=True)
    assert resumed.resumed_from == 2 and resumed.lora_path == settings.checkpoints_path / "dbr.safetensors"
    a, b = _weights(whole.lora_path), _weights(resumed.lora_path)
    unet = [k for k in a if k.startswith("model.diffusion_model.")]
    _assert_same({k: a[k] for k in unet}, {k: b[k] for k in unet})
