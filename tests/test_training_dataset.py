"""Training datasets: kohya folders, captions, buckets, the check command and bad input."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sdcloud.cli import main
from sdcloud.errors import BadRequest
from sdcloud.training.captions import CaptionOptions, process_caption
from sdcloud.training.config import TrainConfig, config_from_mapping
from sdcloud.training.dataset import epoch_batches, make_buckets, scan_dataset
from training_data import make_dataset


def _messy(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "ds", n=3)
    sub = root / "5_sks cat"
    (sub / "2.txt").unlink()  # a missing caption: the folder's class tokens are used
    Image.new("RGB", (96, 64), "white").save(sub / "wide.png")
    (sub / "wide.txt").write_text("wide, cat", encoding="utf-8")
    (sub / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (8, 8)).save(sub / "tiny.png")
    Image.new("RGB", (64, 64)).save(sub / "sjis.png")
    (sub / "sjis.txt").write_bytes("猫、赤い".encode("cp932"))
    make_dataset(tmp_path / "reg", n=2, folder="1_cat", captions=False)
    return root


def test_check_reports_every_problem(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset=str(_messy(tmp_path)), resolution=64, bucket_reso_steps=8, min_bucket_reso=32,
                      reg_dir=str(tmp_path / "reg"))
    report = scan_dataset(cfg)
    assert len(report.train_images) == 4 and len(report.reg_images) == 2
    assert report.missing_captions == ["5_sks cat/2.png", "reg/1_cat/0.png", "reg/1_cat/1.png"]
    captions = {i.path.name: i.caption for i in report.images if not i.is_reg}
    assert captions["2.png"] == "sks cat" and captions["0.png"] == "sks cat, red, tag0"
    assert report.unreadable == ["5_sks cat/broken.png"]
    assert report.too_small == ["5_sks cat/tiny.png (8x8, need >= 16)"]
    assert len(report.bad_captions) == 1 and "not UTF-8 (it looks like cp932)" in report.bad_captions[0]
    wide = next(i for i in report.images if i.path.name == "wide.png")
    assert wide.bucket[0] > wide.bucket[1]  # a wide image gets a wide bucket
    assert sum(report.buckets.values()) == 6 and len(report.buckets) == 2
    assert report.subsets["5_sks cat"]["repeats"] == 5 and report.subsets["reg/1_cat"]["is_reg"]
    with pytest.raises(BadRequest, match="unreadable image"):
        report.raise_if_bad()


def test_check_command(tmp_path: Path, capsys) -> None:
    root = _messy(tmp_path)
    assert main(["train", "check", str(root), "--resolution", "64"]) == 1
    out = capsys.readouterr().out
    assert "5_sks cat: 4 image(s) x 5 repeats, class 'sks cat'" in out
    assert "problem: 1 unreadable image(s): 5_sks cat/broken.png" in out
    assert "cp932" in out and "too small" in out and "captions missing (1" in out
    good = make_dataset(tmp_path / "good")
    assert main(["train", "check", str(good), "--resolution", "64"]) == 0
    assert "buckets: 64x64: 4" in capsys.readouterr().out


def test_buckets_and_epoch_order(tmp_path: Path) -> None:
    buckets = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (768, 320) in buckets and (320, 768) in buckets
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    root = make_dataset(tmp_path / "ds", n=3)
    make_dataset(root, n=2, size=(96, 64), folder="2_wide")
    report = scan_dataset(TrainConfig(dataset=str(root), resolution=64, bucket_reso_steps=8, min_bucket_reso=32))
    a = epoch_batches(report, 2, seed=1, epoch=0)
    assert a == epoch_batches(report, 2, seed=1, epoch=0) and a != epoch_batches(report, 2, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == sorted([0, 1] * 2 + [2, 3, 4] * 5)  # repeats from folder names
    assert all(len({report.images[i].bucket for i in b}) == 1 for b in a)  # batches never mix buckets


def test_caption_options() -> None:
    caption = "sks, cat, red, sitting, outdoors"
    assert process_caption(caption, CaptionOptions(), random.Random(0)) == caption
    shuffled = {process_caption(caption, CaptionOptions(shuffle=True, keep_tokens=1), random.Random(s))
                for s in range(20)}
    assert len(shuffled) > 3 and all(s.startswith("sks, ") for s in shuffled)
    assert process_caption(caption, CaptionOptions(dropout=0.999), random.Random(0)) == ""
    kept = process_caption("sks cat ||| red, blue", CaptionOptions(shuffle=True, keep_tokens_separator="|||"),
                           random.Random(3))
    assert kept.startswith("sks cat, ")


def test_toml_and_aliases(tmp_path: Path) -> None:
    cfg = config_from_mapping({"network_dim": 8, "learning_rate": 1e-3, "steps": 10, "alpha": 4})
    assert (cfg.rank, cfg.lr, cfg.steps, cfg.alpha) == (8, 1e-3, 10, 4.0)
    with pytest.raises(BadRequest, match="unknown training option 'ranks'"):
        config_from_mapping({"ranks": 4})
    with pytest.raises(BadRequest, match="'rank' must be a whole number"):
        config_from_mapping({"rank": "big"})


@pytest.mark.parametrize("field", ["lr", "noise_offset", "prior_loss_weight", "alpha", "conv_alpha", "dropout",
                                   "weight_decay", "max_grad_norm", "min_snr_gamma", "unet_lr", "te_lr",
                                   "caption_dropout", "caption_tag_dropout"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_every_float_option_refuses_non_finite_values(field: str, value: float) -> None:
    with pytest.raises(BadRequest, match=f"option '{field}' must be a finite number"):
        config_from_mapping({field: value})
    cfg = TrainConfig(dataset="ds").replace(**{field: value})  # built in code: validate() catches it
    with pytest.raises(BadRequest, match=f"option '{field}' must be a finite number"):
        cfg.validate()


def test_out_of_range_floats_are_refused() -> None:
    for changes, message in [({"prior_loss_weight": -1.0}, "--prior-loss-weight must be >= 0"),
                             ({"dropout": 1.0}, "--dropout must be in"), ({"te_lr": 0.0}, "--te-lr must be > 0"),
                             ({"max_grad_norm": -1.0}, "--max-grad-norm must be >= 0")]:
        with pytest.raises(BadRequest, match=message):
            TrainConfig(dataset="ds").replace(**changes).validate()
    TrainConfig(dataset="ds", max_grad_norm=0.0, prior_loss_weight=0.0).validate()  # 0: off


@pytest.mark.parametrize("args, message", [
    (["--rank", "0"], "--rank must be > 0"),
    (["--model", "nope"], "checkpoint 'nope' not found"),
    (["--optimizer", "AdamW8bit"], "AdamW8bit needs a CUDA GPU"),
    (["--mixed-precision", "fp16"], "needs a CUDA GPU"),
    (["--name", "../evil"], "--name '../evil'"),
    # the demo model's deepest feature map is 1x1 at 64 px: one value per group norm group
    (["--batch", "1", "--min-bucket-reso", "64"], "too small for this model in a batch of one image"),
    # non-finite or overflowing numbers, from flags or the TOML file (which has inf and nan)
    (["--lr", "inf"], "option 'lr' must be a finite number (got inf)"),
    (["--noise-offset", "1e400"], "option 'noise_offset' must be a finite number (got inf)"),
    (["--seed", "9" * 30], "option 'seed' is too large"),
    (["TOML:lr = inf"], "option 'lr' must be a finite number (got inf)"),
    (["TOML:noise_offset = inf"], "option 'noise_offset' must be a finite number (got inf)"),
    (["TOML:prior_loss_weight = nan"], "option 'prior_loss_weight' must be a finite number (got nan)"),
    (["TOML:min_snr_gamma = -inf"], "option 'min_snr_gamma' must be a finite number (got -inf)"),
    (["TOML:[train]\nweight_decay = 1" + "0" * 400], "option 'weight_decay' is too large"),
    (["TOML:steps = 9223372036854775808"], "option 'steps' is too large"),
])
def test_bad_options_one_line_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    root = make_dataset(tmp_path / "ds")
    data = tmp_path / "data"
    if args[0].startswith("TOML:"):
        (tmp_path / "train.toml").write_text(args[0][5:] + "\n", encoding="utf-8")
        args = ["--train-config", str(tmp_path / "train.toml")]
    proc = subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), "train", "lora", str(root),
                           "--resolution", "64", "--steps", "2", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sdcloud:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((data / "models" / "Lora").glob("*")) if (data / "models" / "Lora").exists() else True


def test_dreambooth_help_names_a_checkpoint_and_refuses_lora_flags(tmp_path: Path, capsys) -> None:
    import re

    with pytest.raises(SystemExit):
        main(["train", "dreambooth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "models/Stable-diffusion/NAME.safetensors" in text and "<lora:NAME" not in text
    assert "models/Lora" not in text
    for flag in ("--rank", "--alpha", "--network", "--conv-rank", "--conv-alpha", "--dropout"):
        assert not re.search(rf"{flag}\b", text), flag  # LoRA network options are not offered
    with pytest.raises(SystemExit):
        main(["train", "lora", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "models/Lora/NAME.safetensors, <lora:NAME:0.8>" in text and "--rank" in text
    assert "our engine, A1111 and ComfyUI load them" in text  # LoHa/LoKr load here too
    root = make_dataset(tmp_path / "ds")
    for extra, named in [(["--rank", "8"], "--rank"), (["--network", "loha", "--dropout", "0.1"],
                                                        "--network, --dropout")]:
        code = main(["--data-dir", str(tmp_path / "data"), "train", "dreambooth", str(root), "--resolution", "64",
                     "--steps", "2", *extra])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1, err
        assert err.startswith(f"sdcloud: {named}: only for 'train lora'") and "fine-tunes the whole model" in err
    assert not (tmp_path / "data" / "models").exists()


@pytest.mark.parametrize("make, message", [
    (lambda root: root.mkdir(parents=True), "no training images"),
    (lambda root: make_dataset(root, size=(12, 12)), "too small"),
    (lambda root: (make_dataset(root), (root / "5_sks cat" / "0.txt").write_bytes("赤".encode("cp932"))),
     "not UTF-8"),
])
def test_bad_datasets_are_refused_before_training(tmp_path: Path, capsys, make, message: str) -> None:
    root = tmp_path / "ds"
    make(root)
    code = main(["--data-dir", str(tmp_path / "data"), "train", "lora", str(root), "--resolution", "64",
                 "--model", "demo", "--steps", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "data" / "models" / "Lora").exists()


def test_cli_run_shows_loss_speed_cost_and_writes_samples(tmp_path: Path, capsys) -> None:
    """What a user watches in a notebook cell: the progress line (loss, running average, speed,
    cost at the given price), the sample images at --sample-every, and how to use the result."""
    root = make_dataset(tmp_path / "ds", n=3)
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), "train", "lora", str(root), "--model", "demo", "--name", "watch",
                 "--steps", "4", "--resolution", "128", "--batch", "2", "--sample-every", "2",
                 "--sample-prompt", "sks", "--sample-steps", "2", "--price-per-hour", "0.5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out + out.err
    assert "training watch" in text and "4/4" in text
    assert "loss=" in text and "avg=" in text and "step/s" in text and "cost=" in text and "USD" in text
    samples = sorted(p.name for p in (data / "outputs" / "train-samples" / "watch").glob("*.png"))
    assert samples == ["step-000002.png", "step-000004.png"]
    assert "<lora:watch:0.8>" in text and (data / "models" / "Lora" / "watch.safetensors").is_file()
