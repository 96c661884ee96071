"""Our LoRA training step vs a bare diffusers + peft loop, same model, batch and options, in one run.

"Ours" is ``Trainer.train_step`` -- the step ``sdcloud train lora`` runs -- on a prepared trainer;
"bare" is the loop of diffusers' ``train_text_to_image_lora.py`` (``unet.add_adapter``) on a copy
of the same UNet, with the same LoRA targets, cached latents and text-encoder outputs, AdamW, LR
scheduler, grad-norm clipping and mixed precision (see ``sdcloud/training/benchmark.py``).

Both run in this one process with one thread count. After a warm-up of each, they are timed in
windows of ``--window`` steps, alternating ours, bare, bare, ours, ... for ``--repeats`` rounds;
each side's figure is the median of its windows, so load from other processes that comes and
goes hits both alike. Printed: both medians, the spread of each side's windows, the ratio
ours/bare (target <= 1.05) and the ratio of each round (two windows next to each other in
time), the load average before and after, and GPU memory on CUDA. On a CPU run the same is
printed for the process's CPU time too: the work each step does, without the time other
processes held the shared cores (wall time on a busy 2-core box swings by tens of percent).

    python bench/train_throughput.py                                       # CPU: demo model, 64px
    python bench/train_throughput.py --random sd15 --resolution 512 --batch 2 --mixed-precision fp16
    python bench/train_throughput.py --random sdxl --resolution 1024 --batch 1 --mixed-precision bf16 \\
        --gradient-checkpointing
    python bench/train_throughput.py --model /models/anything-v5.safetensors --resolution 512
    python bench/train_throughput.py --profile 10                          # where each side's time goes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from sdcloud.settings import Settings  # noqa: E402
from sdcloud.training.benchmark import (  # noqa: E402
    BareLoop,
    OursLoop,
    _strip_lora,
    make_dataset,
    prepared_trainer,
    run_comparison,
)
from sdcloud.training.config import TrainConfig  # noqa: E402
from sdcloud.training.model import BaseModel, load_base_model  # noqa: E402

TARGET = 1.05


def _profile(loop, steps: int, device: torch.device, label: str) -> None:  # noqa: ANN001
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            loop()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"-- profile of {label} ({steps} steps), by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo, demo-xl, a checkpoint name or file (our loader)")
    ap.add_argument("--random", choices=["sd15", "sdxl"], help="a random-weight real-size model from the shipped "
                                                                 "configs instead of --model (GPU boxes)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps of each side first")
    ap.add_argument("--window", type=int, default=5, help="steps per timed window")
    ap.add_argument("--repeats", type=int, default=16, help="timed windows of each side (interleaved)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both sides (default: torch's)")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--min-snr-gamma", type=float, default=0.0)
    ap.add_argument("--noise-offset", type=float, default=0.0)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile N steps of each side (torch profiler) and print the top operators")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(data_dir=root / "data")
        if args.random:
            from gpu_check import FAMILIES, build_pipeline

            pipe = build_pipeline(args.random, False, torch.device("cpu"), torch.float32)
            base = BaseModel(pipe, FAMILIES[args.random][0], "epsilon", f"random-{args.random}",
                             f"random-{args.random}")
            label = f"random real-size {args.random}"
        else:
            base = load_base_model(settings, args.model)
            label = args.model
        import copy

        bare_unet = copy.deepcopy(base.pipe.unet).to("cpu")  # pristine: before our LoRA goes in
        data = make_dataset(root / "ds", max(8, 2 * args.batch), args.resolution)
        cfg = TrainConfig(dataset=str(data), model=args.model, name="bench", steps=100_000, rank=args.rank,
                          alpha=args.rank / 2, lr=1e-4, resolution=args.resolution, batch=args.batch,
                          mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                          min_snr_gamma=args.min_snr_gamma, noise_offset=args.noise_offset,
                          save_state_every=0, seed=1, cache_latents_to_disk=False)
        trainer = prepared_trainer(cfg, settings, device, base)
        if args.profile:
            ours, bare = OursLoop(trainer), BareLoop(trainer, copy.deepcopy(bare_unet))
            for loop in (ours, bare):
                for _ in range(3):
                    loop()
                _profile(loop, args.profile, device, loop.label)
            _strip_lora(bare.unet)
            del ours, bare
        result = run_comparison(trainer, bare_unet, window=args.window, repeats=args.repeats, warmup=args.warmup)
    load_after = os.getloadavg()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}, {result.threads} thread(s) for both sides")
    print(f"model {label}, {args.resolution}px, batch {args.batch}, rank {args.rank}, precision "
          f"{args.mixed_precision}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"{args.warmup} warm-up steps each, then {args.repeats} interleaved windows x {args.window} steps each")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    for cpu in (False, True) if device.type == "cpu" else (False,):
        if cpu:
            print("CPU time of this process (what each step computes, without the time other processes "
                  "held the cores):")
        else:
            print("wall time:")
        for side, key in (("bare diffusers+peft", "bare"), ("sdcloud trainer", "ours")):
            med = result.median(key, cpu)
            windows = " ".join(f"{s * 1000:.1f}" for s in (result.cpu_seconds if cpu else result.seconds)[key])
            mem = ""
            if result.extra_gb.get(key) is not None:
                mem = f", training memory above resident {result.extra_gb[key]:.2f} GB"
                if key == "ours" and result.peak_gb.get("ours") is not None:
                    mem += f", peak alone {result.peak_gb['ours']:.2f} GB"
            print(f"  {side:<20} median {med * 1000:.2f} ms/step ({1 / med:.2f} it/s), spread "
                  f"{result.spread(key, cpu) * 100:.0f}%{mem}; windows (ms/step): {windows}")
        rounds = result.round_ratios(cpu)
        print(f"  ratio ours/bare: {result.ratio(cpu):.3f} (target <= {TARGET}); per-round ratios "
              f"{' '.join(f'{r:.3f}' for r in rounds)}, their median {statistics.median(rounds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
