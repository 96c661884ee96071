"""``sdcloud train``: LoRA training (``lora``), dataset check (``check``), memory presets (``presets``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sdcloud.commands._common import load_settings
from sdcloud.i18n import N_, _

# the trainer's phases as the progress lines name them (English keys: Trainer's phase names)
PHASES = {"loading": N_("loading {name} ..."), "saving": N_("saving {name} ..."),
          "stopped": N_("stopped {name} ...")}

# flag -> (TrainConfig field, type, help); every flag defaults to None so a TOML value shows through
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "checkpoint name in models/Stable-diffusion, a path, or demo / demo-xl"),
    ("--name", "name", str, "output name: models/Lora/NAME.safetensors, <lora:NAME:0.8>"),
    ("--steps", "steps", int, "optimizer steps (default 1500)"),
    ("--rank", "rank", int, "network dim (kohya --network_dim; default 16)"),
    ("--alpha", "alpha", float, "network alpha (kohya --network_alpha; default 8)"),
    ("--lr", "lr", float, "learning rate (default 1e-4; Prodigy: 1.0)"),
    ("--unet-lr", "unet_lr", float, "UNet learning rate (default --lr)"),
    ("--te-lr", "te_lr", float, "text encoder learning rate (default --lr)"),
    ("--resolution", "resolution", int, "training resolution (default 512; SDXL 1024)"),
    ("--batch", "batch", int, "batch size (default 2)"),
    ("--seed", "seed", int, "seed (default 1); same seed = same result, also across --resume"),
    ("--grad-accum", "grad_accum", int, "gradient accumulation steps"),
    ("--network", "network", str, "lora (default), locon (LoRA on 3x3 convs too), loha or lokr (LyCORIS, "
                                  "needs lycoris-lora; our engine, A1111 and ComfyUI load them)"),
    ("--conv-rank", "conv_rank", int, "conv dim for locon (kohya conv_dim)"),
    ("--conv-alpha", "conv_alpha", float, "conv alpha (kohya conv_alpha)"),
    ("--dropout", "dropout", float, "LoRA dropout"),
    ("--optimizer", "optimizer", str, "AdamW (default), AdamW8bit (CUDA), Prodigy, Lion"),
    ("--weight-decay", "weight_decay", float, "optimizer weight decay (default 0.01)"),
    ("--scheduler", "scheduler", str, "constant, constant_with_warmup, linear, cosine, cosine_with_restarts, "
                                      "polynomial"),
    ("--warmup-steps", "warmup_steps", int, "LR warm-up steps"),
    ("--max-grad-norm", "max_grad_norm", float, "gradient clipping (0 = off; default 1.0)"),
    ("--noise-offset", "noise_offset", float, "noise offset (0.05-0.1 brightens/darkens better)"),
    ("--min-snr-gamma", "min_snr_gamma", float, "min-SNR loss weighting gamma (5 is common; 0 = off)"),
    ("--clip-skip", "clip_skip", int, "clip skip (2 for anime models)"),
    ("--prior-loss-weight", "prior_loss_weight", float, "loss weight of regularisation images"),
    ("--mixed-precision", "mixed_precision", str, "no, fp16 or bf16 (CUDA only)"),
    ("--reg-dir", "reg_dir", str, "regularisation images folder (kohya layout)"),
    ("--caption-extension", "caption_extension", str, "caption file extension (default .txt, then .caption)"),
    ("--repeats", "repeats", int, "repeats of images directly in DATASET (N_concept folders set their own)"),
    ("--keep-tokens", "keep_tokens", int, "keep the first N caption tags in place when shuffling"),
    ("--caption-dropout", "caption_dropout", float, "probability of training a sample with an empty caption"),
    ("--caption-tag-dropout", "caption_tag_dropout", float, "probability of dropping each tag"),
    ("--min-bucket-reso", "min_bucket_reso", int, "smallest bucket side (default min(256, resolution))"),
    ("--max-bucket-reso", "max_bucket_reso", int, "largest bucket side (default 1024)"),
    ("--bucket-reso-steps", "bucket_reso_steps", int, "bucket size step (default 64)"),
    ("--min-image-size", "min_image_size", int, "refuse images whose shorter side is below this "
                                                "(default resolution/4)"),
    ("--save-every", "save_every", int, "also write models/Lora/NAME-stepN.safetensors every N steps"),
    ("--save-state-every", "save_state_every", int, "resumable state every N steps (default 100)"),
    ("--sample-every", "sample_every", int, "sample image every N steps (outputs/train-samples/NAME/)"),
    ("--sample-prompt", "sample_prompt", str, "prompt of the sample images (default: first caption)"),
    ("--sample-steps", "sample_steps", int, "sampling steps of the sample images"),
    ("--comment", "comment", str, "ss_training_comment metadata"),
]
_BOOLS = [
    ("--train-text-encoder", "train_text_encoder", "also train a text encoder LoRA (lora_te_*)"),
    ("--unet-only", "unet_only", "train the UNet only (kohya --network_train_unet_only)"),
    ("--v-prediction", "v_prediction", "the model is a v-prediction model (default: detected)"),
    ("--gradient-checkpointing", "gradient_checkpointing", "less VRAM, ~20%% slower"),
    ("--shuffle-caption", "shuffle_caption", "shuffle comma-separated caption tags"),
    ("--no-bucket", "enable_bucket", "no aspect-ratio buckets: every image cropped square"),
    ("--no-latent-cache-on-disk", "cache_latents_to_disk", "keep cached latents in memory only"),
]
_INVERTED = {"enable_bucket", "cache_latents_to_disk"}
# what 'train dreambooth' (a whole-model fine-tune) says instead of the LoRA texts
_DREAMBOOTH_HELP = {
    "name": "output name: models/Stable-diffusion/NAME.safetensors, a checkpoint (A1111 single file)",
    "save_every": "also write models/Stable-diffusion/NAME-stepN.safetensors every N steps",
    "comment": "ss_training_comment metadata of the checkpoint",
}
# LoRA network options: 'train dreambooth' does not list them and refuses them with one line
LORA_ONLY = ("rank", "alpha", "network", "conv_rank", "conv_alpha", "dropout")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LoRAs (kohya-compatible, resumable)",
                       description="Train LoRAs that load in A1111, ComfyUI and sdcloud; the state survives "
                                   "disconnects (--resume).")
    tsub = p.add_subparsers(dest="train_command", metavar="SUBCOMMAND")
    lora = tsub.add_parser("lora", help="train a LoRA on a dataset folder",
                           description="Train a LoRA. Every option can also be set in --train-config (TOML).")
    _add_train_flags(lora, "lora")
    lora.set_defaults(func=run_lora, mode="lora")
    db = tsub.add_parser("dreambooth", help="DreamBooth: fine-tune the whole UNet, with prior preservation",
                         description="Full fine-tune (UNet, optionally the text encoder) with class images our "
                                     "engine generates; writes models/Stable-diffusion/NAME.safetensors (A1111 "
                                     "single file, ready for 'sdcloud models push'). Same dataset, resume and "
                                     "progress as 'train lora'.")
    _add_train_flags(db, "dreambooth")
    db.add_argument("--class-prompt", dest="opt_class_prompt", metavar="PROMPT",
                    help="class prompt, e.g. 'a photo of a dog'")
    db.add_argument("--num-class-images", dest="opt_num_class_images", type=int, metavar="N",
                    help="prior-preservation images to generate (kept in train-class-images/NAME)")
    db.set_defaults(func=run_lora, mode="dreambooth")
    check = tsub.add_parser("check", help="check a dataset: images, captions, buckets, problems")
    check.add_argument("dataset")
    check.add_argument("--resolution", type=int, default=512)
    check.add_argument("--reg-dir")
    check.add_argument("--caption-extension", default="")
    check.add_argument("--bucket-reso-steps", type=int, default=64)
    check.add_argument("--min-image-size", type=int)
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=run_check)
    presets = tsub.add_parser("presets", help="memory presets for T4 16 GB / 8 GB / 6 GB cards")
    presets.add_argument("--json", action="store_true")
    presets.set_defaults(func=run_presets)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_train_flags(lora: argparse.ArgumentParser, mode: str) -> None:
    lora.add_argument("dataset", nargs="?", help="dataset folder: images + .txt/.caption, or kohya N_concept folders")
    lora.add_argument("--train-config", help="TOML file with these options (flags override it)")
    lora.add_argument("--preset", help="memory preset: see 'sdcloud train presets'")
    for flag, dest, typ, help_ in _FLAGS:
        if mode == "dreambooth":
            help_ = argparse.SUPPRESS if dest in LORA_ONLY else _DREAMBOOTH_HELP.get(dest, help_)
        lora.add_argument(flag, dest=f"opt_{dest}", type=typ, default=None, help=help_, metavar=dest.upper())
    for flag, dest, help_ in _BOOLS:
        lora.add_argument(flag, dest=f"opt_{dest}", action="store_const", const=dest not in _INVERTED,
                          default=None, help=help_)
    lora.add_argument("--resume", action="store_true", help="continue from the saved state (local or on the store)")
    lora.add_argument("--restart", action="store_true", help="start over, dropping the state of an unfinished run")
    lora.add_argument("--store", help="store for the training state: folder, hf://user/repo or s3://bucket/prefix")
    lora.add_argument("--store-endpoint", help="S3-compatible endpoint URL")
    lora.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    lora.add_argument("--price-per-hour", type=float, help="GPU price for the cost shown in the progress line")
    lora.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def config_from_args(args: argparse.Namespace) -> Any:
    """defaults < preset < --train-config < flags."""
    from sdcloud.training.config import TrainConfig, config_from_mapping, load_toml
    from sdcloud.training.presets import apply_preset

    mode = getattr(args, "mode", "lora")
    if mode == "dreambooth":
        given = [f"--{d.replace('_', '-')}" for d in LORA_ONLY if getattr(args, f"opt_{d}", None) is not None]
        if given:
            from sdcloud.errors import BadRequest

            raise BadRequest(_("{flags}: only for 'train lora' (a LoRA network); 'train dreambooth' "
                               "fine-tunes the whole model").format(flags=", ".join(given)))
    cfg = TrainConfig()
    toml = load_toml(Path(args.train_config)) if args.train_config else {}
    preset = args.preset or toml.pop("memory_preset", None)
    if preset:
        cfg = apply_preset(cfg, preset)
    cfg = config_from_mapping(toml, cfg)
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    if args.dataset:
        flags["dataset"] = args.dataset
    flags["mode"] = mode
    return config_from_mapping(flags, cfg)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def run_lora(args: argparse.Namespace) -> int:
    import signal
    import threading

    cfg = config_from_args(args)
    settings = load_settings(args, device=args.device, price_per_hour=args.price_per_hour,
                             store=args.store, store_endpoint=args.store_endpoint)
    from sdcloud.training.trainer import TrainingStopped, preflight

    if cfg.num_class_images:  # class images are generated into this folder before training
        from sdcloud.training.trainer import class_dir

        class_dir(cfg, settings).mkdir(parents=True, exist_ok=True)
        cfg = cfg.replace(reg_dir=str(class_dir(cfg, settings).parent))
    report = preflight(cfg, settings)  # one clear line before anything heavy
    _warn_vram(cfg, settings)
    settings.ensure_dirs()
    store = None
    if settings.store:
        from sdcloud.storage.stores import open_store

        store = open_store(settings.store, settings.store_endpoint)
    from sdcloud.cloud.session import session_guard_for
    from sdcloud.training.trainer import Trainer

    stop = threading.Event()
    finished = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        stop.set()

    def drain(timeout: float) -> bool:
        stop.set()
        return finished.wait(timeout)

    guard = session_guard_for(settings, drain_jobs=drain, exit=lambda code: None,
                              on_warn=lambda msg, _left: print(_("sdcloud: WARNING: {message}").format(message=msg),
                                                               file=sys.stderr),
                              log=lambda msg: print(f"sdcloud: {msg}", file=sys.stderr))
    guard_stop = threading.Event()
    threading.Thread(target=guard.run, args=(guard_stop, 5.0), daemon=True, name="sdcloud-train-guard").start()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    from tqdm import tqdm

    n_images = len(report.train_images)
    print(_("dataset: {images} image(s), {reg} regularisation, buckets {buckets}").format(
        images=n_images, reg=len(report.reg_images),
        buckets=", ".join(f"{k}: {v}" for k, v in report.buckets.items())), file=sys.stderr)
    bars: list[Any] = []

    def on_progress(p: Any) -> None:
        if p.phase != "training":
            if p.phase in ("loading", "saving", "stopped") and (not bars or p.phase != "loading"):
                line = _(PHASES.get(p.phase, p.phase + " {name} ...")).format(name=cfg.name)
                (bars[0].write if bars else lambda m: print(m, file=sys.stderr))(line)
            return
        if not bars:  # the clock (it/s, ETA) starts with the first step, not with model loading
            bars.append(tqdm(total=cfg.steps, initial=p.step - 1, unit="step",
                             desc=_("training {name}").format(name=cfg.name), file=sys.stderr, dynamic_ncols=True))
        bar = bars[0]
        bar.update(p.step - bar.n)
        post = {"loss": f"{p.loss:.4f}", "avg": f"{p.avg_loss:.4f}"}
        spend = guard.meter.spend
        if spend is not None:
            post["cost"] = f"{spend:.3f} {guard.meter.currency}"
        bar.set_postfix(post)
        if p.sample:
            bar.write(_("sample: {path}").format(path=p.sample))
        if p.state_step:
            bar.write(_("state saved at step {step}").format(step=p.state_step))

    trainer = Trainer(cfg, settings, store=store, progress=on_progress, stop=stop, restart=args.restart)
    try:
        result = trainer.run(resume=args.resume)
    except TrainingStopped as exc:
        for bar in bars:
            bar.close()
        print(f"sdcloud: {exc}", file=sys.stderr)
        return 143 if signal.SIGTERM in signals else 130 if signals else 3
    finally:
        finished.set()
        guard_stop.set()
        for bar in bars:
            bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    spend = guard.meter.spend
    summary = {"lora": str(result.lora_path), "steps": result.steps, "resumed_from": result.resumed_from,
               "final_loss": result.losses[-1] if result.losses else None, "seconds": round(result.seconds, 1),
               "cost": None if spend is None else round(spend, 4), "samples": result.samples}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(result.lora_path)
        use = (_("load it as --model {name}") if cfg.mode == "dreambooth" else _("use it as <lora:{name}:0.8>"))
        cost = _("; cost {cost} {currency}").format(cost=f"{spend:.3f}", currency=guard.meter.currency) if spend else ""
        print(use.format(name=cfg.name) + cost, file=sys.stderr)
    return 0


def _warn_vram(cfg: Any, settings: Any) -> None:
    """The doctor's fit warning, for the GPU this run will use (CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        return
    from sdcloud.training.model import model_family
    from sdcloud.training.presets import fit_warning

    family = model_family(settings, cfg.model)  # from the file's header, not its name
    vram = torch.cuda.get_device_properties(0).total_memory / 1024**3
    warning = fit_warning(cfg, family, vram)
    if warning:
        print(_("sdcloud: WARNING: {message}").format(message=warning), file=sys.stderr)


def run_check(args: argparse.Namespace) -> int:
    from sdcloud.training.config import TrainConfig
    from sdcloud.training.dataset import scan_dataset

    cfg = TrainConfig(dataset=args.dataset, resolution=args.resolution, reg_dir=args.reg_dir,
                      caption_extension=args.caption_extension, bucket_reso_steps=args.bucket_reso_steps,
                      min_image_size=args.min_image_size)
    report = scan_dataset(cfg)
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0 if data["ok"] else 1
    print(_("dataset {folder}").format(folder=report.root))
    for label, sub in report.subsets.items():
        cls = _(", class '{tokens}'").format(tokens=sub["class_tokens"]) if sub["class_tokens"] else ""
        reg = _(" (reg)") if sub["is_reg"] else ""
        print("  " + _("{label}: {images} image(s) x {repeats} repeats").format(
            label=label, images=sub["images"], repeats=sub["repeats"]) + cls + reg)
    print(_("images: {images} (+{reg} regularisation); samples per epoch: {samples}").format(
        images=data["images"], reg=data["reg_images"], samples=data["steps_per_epoch_images"]))
    print(_("buckets: {buckets}").format(
        buckets=", ".join(f"{k}: {v}" for k, v in data["buckets"].items()) or _("none")))
    if report.missing_captions:
        print(_("captions missing ({n}; the folder's class tokens are used): ").format(n=len(report.missing_captions))
              + ", ".join(report.missing_captions[:5]) + (" ..." if len(report.missing_captions) > 5 else ""))
    for line in data["errors"]:
        print(_("problem: {line}").format(line=line))
    print(_("ok: ready to train") if data["ok"] else _("not ready: fix the problems above"), file=sys.stderr)
    return 0 if data["ok"] else 1


def run_presets(args: argparse.Namespace) -> int:
    from sdcloud.training.presets import PRESETS

    if args.json:
        print(json.dumps({k: v.to_dict() for k, v in PRESETS.items()}, indent=2))
        return 0
    for name, preset in PRESETS.items():
        opts = " ".join(f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
                        for k, v in preset.options.items())
        print(f"{name:14} {preset.family:5} {preset.vram_gb:>3} GB  {preset.description}\n{'':26}{opts}")
    return 0
