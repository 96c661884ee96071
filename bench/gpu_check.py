"""One prepared GPU check: every CUDA path of sdcloud, and its speed against raw diffusers.

Runs on real-size SD 1.5 and SDXL models with random weights (speed does not depend on weight values):

    python bench/gpu_check.py --quick --json gpu_check.json      # < 5 min on an H100-class GPU
    python bench/gpu_check.py                                    # the full set (split it with --only)
    python bench/gpu_check.py --only engine,compile --families sdxl
    python bench/gpu_check.py --quick --write-throughput catalog.json   # feed `sdcloud plan`

The pipelines are built from the configs shipped in the package (no download, no network).
Measured in the same run, each against its baseline:

  engine    sampling it/s at 512x512 (SD 1.5) and 1024x1024 (SDXL), batch 1 and 4: our engine vs a
            bare diffusers pipeline call on the same modules, scheduler and steps (target <= 1.03)
  compile   the same with ``--compile`` (torch.compile of the UNet)
  vae       fp16 VAE decode with NaN forced (a hook on the decoder): the fallback to fp32 recovers
  bf16      the engine in bf16 vs fp16
  medvram   ``--medvram`` / ``--lowvram``: peak VRAM and time vs no offload
  lowvram
  merge     the streaming merge with ``--device cuda`` on real-size random checkpoints vs a copy
  train     a training step (steps/s, peak VRAM) through the hook ``sdcloud.training.benchmark.
            measure_training_step`` once training exists; skipped with a message before

Every ratio is our cost over the baseline's (time or memory): lower is better. It/s are
sampling only (from per-step timestamps, as A1111 shows them); the end-to-end ratio (text
encoder and VAE included) is in each row's note. Without CUDA it runs at tiny sizes (the demo
model's widths, 64x64, 2 steps) as a smoke test: the CUDA-only rows say they were skipped.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the lent GPU machine has no network
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # merge_memory's checkpoint generator
sys.path.insert(0, str(ROOT / "src"))  # this checkout's sdcloud, installed or not

SECTIONS = ("engine", "compile", "vae", "bf16", "refiner", "medvram", "lowvram", "merge", "train")
CUDA_ONLY = {"compile": "torch.compile is checked on CUDA only",
             "bf16": "the engine runs fp32 on CPU",
             "medvram": "the engine applies --medvram on CUDA only",
             "lowvram": "the engine applies --lowvram on CUDA only"}
FAMILIES = {"sd15": ("sd1", 512), "sdxl": ("sdxl", 1024)}  # name -> (arch family, reference size)
TARGET_ENGINE = 1.03
TARGET_MERGE = 1.3  # issue 5: the streaming merge within 1.3x a plain copy
TARGET_TRAIN = 1.05  # issue 13: our training step vs a bare diffusers + peft loop
TRAINING_HOOK = ("sdcloud.training.benchmark", "measure_training_step")
PROMPT, NEGATIVE = "a photo of a cat in a hat, detailed", "blurry"
GB = 2**30
TINY_THROUGHPUT = ("gpu_check: --write-throughput needs a real-size run on a CUDA GPU (a tiny run measures "
                   "nothing a planner can use)")


@dataclass
class Row:
    key: str  # stable id, e.g. "sd15.engine.b1"
    check: str  # what a reader sees
    unit: str = ""
    ours: float | None = None
    base: float | None = None
    ratio: float | None = None  # our cost / the baseline's (time or memory): lower is better
    target: float | None = None
    vram_gb: float | None = None
    base_vram_gb: float | None = None
    note: str = ""
    status: str = "ok"  # ok | skipped | failed

    @property
    def passed(self) -> bool | None:
        if self.status != "ok" or self.ratio is None or self.target is None:
            return None
        return self.ratio <= self.target


@dataclass
class Plan:
    device: Any
    tiny: bool
    quick: bool
    sections: tuple[str, ...]
    families: tuple[str, ...]
    steps: int
    runs: int
    compile: bool
    workdir: Path
    size: dict[str, int] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        return "fp16" if self.device.type == "cuda" else "fp32"

    def target(self, value: float) -> float | None:
        """Targets hold for real sizes; a tiny run's ratios are fixed overheads and say nothing."""
        return None if self.tiny else value

    def wide(self, family: str) -> bool:
        """Heavier rows (SDXL compile, bf16, lowvram; batch 4 compile) run in the full set only."""
        return not self.quick or family == "sd15"


class Report:
    """Collects rows, prints each as it comes, rewrites the JSON after each (a run cut off by a
    time limit still leaves what it measured)."""

    def __init__(self, json_path: Path | None, header: dict[str, Any]) -> None:
        self.rows: list[Row] = []
        self.json_path = json_path
        self.header = header

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(format_row(row), flush=True)
        self.save()
        return row

    def save(self) -> None:
        if self.json_path is None:
            return
        data = {**self.header, "rows": [dict(asdict(r), passed=r.passed) for r in self.rows]}
        tmp = self.json_path.with_name(self.json_path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.json_path)


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} {unit}" if unit == "s" else f"{value:.2f} {unit}"


def format_row(r: Row) -> str:
    if r.status != "ok":
        return f"{r.check:<50} {r.status}: {r.note}"
    line = f"{r.check:<50} {_num(r.ours, r.unit):>13} {_num(r.base, r.unit):>13}"
    if r.ratio is not None:
        verdict = "" if r.target is None else f" {'PASS' if r.passed else 'FAIL'} (<= {r.target})"
        line += f"  ratio {r.ratio:.3f}{verdict}"
    if r.vram_gb is not None:
        line += f"  VRAM {r.vram_gb:.2f}" + (f"/{r.base_vram_gb:.2f}" if r.base_vram_gb is not None else "") + " GB"
    return line + (f"  {r.note}" if r.note else "")


# ---- devices and timing ---------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


@dataclass
class Timing:
    seconds: float  # median end-to-end seconds per call
    it_s: float | None  # median sampling iterations per second (None when < 2 steps)
    peak_gb: float | None


class StepClock:
    """Per-step timestamps (synchronised), fed by our progress callback and diffusers'
    ``callback_on_step_end`` alike."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.stamps: list[float] = []

    def tick(self) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())

    def it_s(self) -> float | None:
        if len(self.stamps) < 2:
            return None
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


def measure(calls: dict[str, Callable[[StepClock], None]], device: Any, runs: int, warmup: int = 1
            ) -> dict[str, Timing]:
    """Time each call ``runs`` times after ``warmup`` calls, interleaved so that machine noise
    (clocks, other tenants) hits each alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn(StepClock(device))
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    rates: dict[str, list[float]] = {k: [] for k in calls}
    peaks: dict[str, float | None] = dict.fromkeys(calls)
    for _ in range(runs):
        for name, fn in calls.items():
            clock = StepClock(device)
            _reset_peak(device)
            _sync(device)
            start = time.perf_counter()
            fn(clock)
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
            if clock.it_s() is not None:
                rates[name].append(clock.it_s())  # type: ignore[arg-type]
            peak = _peak_gb(device)
            peaks[name] = max(peaks[name] or 0.0, peak) if peak is not None else None
    return {k: Timing(statistics.median(seconds[k]), statistics.median(rates[k]) if rates[k] else None,
                      peaks[k]) for k in calls}


# ---- real-size random pipelines --------------------------------------------------------------


def build_pipeline(family: str, tiny: bool, device: Any, dtype: Any, seed: int = 0) -> Any:
    """A diffusers pipeline with random weights from the shipped config dir (the same dir the
    loader uses for single files), built directly on ``device``. ``tiny`` applies the demo
    model's widths on top, as the demo checkpoints do."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sdcloud.engine.demo import demo_configs
    from sdcloud.engine.model_configs import config_dir, pipeline_class

    arch = FAMILIES[family][0]
    cfg = config_dir(arch, overrides=demo_configs(family) if tiny else None)

    def make(build: Callable[[], Any], offset: int) -> Any:
        torch.manual_seed(seed + offset)
        with torch.device(device):
            module = build()
        return module.to(dtype).eval().requires_grad_(False)

    unet_cls, vae_cls = diffusers.UNet2DConditionModel, diffusers.AutoencoderKL
    parts: dict[str, Any] = {
        "unet": make(lambda: unet_cls.from_config(unet_cls.load_config(cfg / "unet")), 0),
        "vae": make(lambda: vae_cls.from_config(vae_cls.load_config(cfg / "vae")), 1),
        "text_encoder": make(lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")), 2),
        "tokenizer": CLIPTokenizer.from_pretrained(str(cfg / "tokenizer")),
        "scheduler": diffusers.EulerDiscreteScheduler.from_config(
            diffusers.EulerDiscreteScheduler.load_config(cfg / "scheduler")),
    }
    if arch == "sdxl":
        parts["text_encoder_2"] = make(
            lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2")), 3)
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(cfg / "tokenizer_2"))
        parts["add_watermarker"] = False
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = getattr(diffusers, pipeline_class(arch))(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _model_info(family: str) -> Any:
    from sdcloud.engine.loader import ModelInfo

    name = f"random-{family}"
    return ModelInfo(name, name, None, None, FAMILIES[family][0], "base", "epsilon", is_demo=True)


def _engine(plan: Plan, pipe: Any, family: str, **settings: Any) -> Any:
    from sdcloud.engine.engine import Engine
    from sdcloud.settings import Settings

    base = Settings(data_dir=plan.workdir / "data", device=str(plan.device), dtype="fp16")
    engine = Engine(base.replace(**settings))
    engine.load_pipeline(pipe, _model_info(family))
    return engine


def _request(family: str, size: int, batch: int, steps: int) -> Any:
    from sdcloud.engine.types import GenerationRequest

    return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, width=size, height=size,
                             seed=1, sampler_name="Euler", scheduler="Automatic", cfg_scale=7.0,
                             batch_size=batch)


def ours_call(engine: Any, req: Any) -> Callable[[StepClock], None]:
    def run(clock: StepClock) -> None:
        result = engine.generate(req, progress=lambda _p: clock.tick())
        assert len(result.images) == req.batch_size

    return run


def raw_call(pipe: Any, req: Any) -> Callable[[StepClock], None]:
    """The bare diffusers pipeline call a user would write, with the engine's scheduler."""
    import torch

    from sdcloud.engine.sampler_names import build_scheduler

    pipe.scheduler = build_scheduler("Euler", "Automatic", dict(pipe.scheduler.config))

    def run(clock: StepClock) -> None:
        def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict) -> dict:
            clock.tick()
            return kwargs

        out = pipe(req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=req.steps,
                   width=req.width, height=req.height, guidance_scale=req.cfg_scale,
                   num_images_per_prompt=req.batch_size, generator=torch.Generator("cpu").manual_seed(req.seed),
                   callback_on_step_end=on_step)
        assert len(out.images) == req.batch_size

    return run


# ---- sections -----------------------------------------------------------------------------------


def engine_vs_raw(plan: Plan, report: Report, engine: Any, pipe: Any, family: str, batch: int,
                  label: str) -> Timing:
    """Adds the row; returns our engine's timing (the reference for the bf16 row)."""
    from torch._dynamo.utils import counters

    size = plan.size[family]
    req = _request(family, size, batch, plan.steps)
    graphs = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    t = measure({"ours": ours_call(engine, req), "raw": raw_call(pipe, req)}, plan.device, plan.runs)
    wall = time.perf_counter() - started
    ours, raw = t["ours"], t["raw"]
    note = f"e2e ratio {ours.seconds / raw.seconds:.3f} ({ours.seconds:.2f}/{raw.seconds:.2f} s per call)"
    if "compile" in label:  # many graphs for one shape would mean a recompile per step
        note += (f"; {wall:.0f} s with compile warm-up, {counters['stats']['unique_graphs'] - graphs} graphs "
                 "compiled")
    report.add(Row(
        f"{family}.{'compile' if 'compile' in label else 'engine'}.b{batch}",
        f"{family} {size}x{size} b{batch} {label}: engine vs diffusers", "it/s",
        ours.it_s, raw.it_s, raw.it_s / ours.it_s if ours.it_s and raw.it_s else None, plan.target(TARGET_ENGINE),
        ours.peak_gb, raw.peak_gb, note))
    return ours


def check_compile(plan: Plan, report: Report, pipe: Any, family: str) -> None:
    import torch

    eager_unet = pipe.unet
    engine = _engine(plan, pipe, family, compile=True)
    try:
        for batch in (1,) if plan.quick else (1, 4):
            engine_vs_raw(plan, report, engine, pipe, family, batch, f"{plan.dtype} compile")
    finally:
        engine.unload()
        pipe.unet = eager_unet
        torch._dynamo.reset()


def _nan_in_half(_module: Any, _args: Any, output: Any) -> Any:
    """A decoder that overflows in fp16 (what the SDXL VAE does): NaN out in fp16, fine in fp32."""
    import torch

    return output * float("nan") if output.dtype == torch.float16 else output


def check_vae_fallback(plan: Plan, report: Report, engine: Any, pipe: Any, family: str) -> None:
    """fp16 decode with NaN forced: the engine must redo it in fp32, keep the VAE in fp32, and
    give a real image. On CPU the VAE is put in fp16 by hand (CPU convolutions take fp16), so
    the same code path runs there too."""
    import numpy as np
    import torch

    size = plan.size[family]
    req = _request(family, size, 1, 1)
    vae, dtype = pipe.vae, pipe.unet.dtype
    state: dict[str, Any] = {}

    def decode(forced: bool) -> Callable[[StepClock], None]:
        def run(clock: StepClock) -> None:
            vae.to(torch.float16)
            handle = vae.decoder.register_forward_hook(_nan_in_half) if forced else None
            try:
                result = engine.generate(req, progress=lambda _p: clock.tick())
            finally:
                if handle is not None:
                    handle.remove()
            state[forced] = (vae.dtype, float(np.asarray(result.images[0], dtype=np.float32).std()))

        return run

    try:
        t = measure({"forced": decode(True), "plain": decode(False)}, plan.device, max(plan.runs, 1))
    finally:
        vae.to(dtype)
    forced_dtype, forced_std = state[True]
    recovered = forced_dtype == torch.float32 and forced_std > 0
    note = "recovered: VAE now fp32, image not blank" if recovered else \
        f"NOT recovered: VAE {forced_dtype}, image std {forced_std:.3g}"
    if state[False][0] == torch.float32:
        note += "; the plain fp16 decode overflowed too (random weights) and fell back"
    report.add(Row(f"{family}.vae_fallback", f"{family} {size}x{size} fp16 VAE, NaN forced: fallback vs plain",
                   "s", t["forced"].seconds, t["plain"].seconds, t["forced"].seconds / t["plain"].seconds, None,
                   t["forced"].peak_gb, t["plain"].peak_gb, note, "ok" if recovered else "failed"))


def single(plan: Plan, engine: Any, family: str, batch: int = 1, steps: int | None = None, runs: int | None = None
           ) -> Timing:
    req = _request(family, plan.size[family], batch, steps or plan.steps)
    return measure({"x": ours_call(engine, req)}, plan.device, runs or plan.runs)["x"]


def check_bf16(plan: Plan, report: Report, pipe: Any, family: str, fp16: Timing) -> None:
    import torch

    engine = _engine(plan, pipe, family, dtype="bf16")
    try:
        bf = single(plan, engine, family)
    finally:
        engine.unload()
        pipe.to(plan.device, torch.float16)
    report.add(Row(f"{family}.bf16", f"{family} {plan.size[family]}px b1 engine: bf16 vs {plan.dtype}", "it/s",
                   bf.it_s, fp16.it_s, fp16.it_s / bf.it_s if bf.it_s and fp16.it_s else None, None,
                   bf.peak_gb, fp16.peak_gb, f"{bf.seconds:.2f}/{fp16.seconds:.2f} s per call"))


def check_refiner(plan: Plan, report: Report, pipe: Any, family: str) -> None:
    """Issue 17's refiner: a request that switches to a second model of the same size at 0.5 vs
    one model, with room for both on the GPU; then with every switch parking the other model in
    CPU RAM (engine/residency.py's small-card path, forced by an impossible headroom): the same
    image, and what the moves cost."""
    import dataclasses

    import numpy as np
    import torch

    from sdcloud.engine import residency

    second = build_pipeline(family, plan.tiny, plan.device, pipe.unet.dtype, seed=1)
    if plan.device.type == "cuda":
        residency.place(second, "cpu")  # a loaded refiner starts in CPU RAM
        second.vae.to("cpu")
        torch.cuda.empty_cache()
    engine = _engine(plan, pipe, family)
    headroom = residency.HEADROOM
    try:
        engine.load_extra_pipeline("refiner-random", second, _model_info(family))
        plain = _request(family, plan.size[family], 1, plan.steps)
        refined = dataclasses.replace(plain, refiner_checkpoint="refiner-random", refiner_switch_at=0.5)
        t = measure({"one": ours_call(engine, plain), "two": ours_call(engine, refined)}, plan.device, plan.runs)
        room = engine.generate(refined)
        residency.HEADROOM = 1 << 60  # never room: park on every switch
        parked_t = measure({"x": ours_call(engine, refined)}, plan.device, 1)["x"]
        parked = engine.generate(refined)
    finally:
        residency.HEADROOM = headroom
        engine.unload()
        pipe.to(plan.device)
    diff = int(np.abs(np.asarray(room.images[0], dtype=np.int16) - np.asarray(parked.images[0], dtype=np.int16)).max())
    assert "Refiner: " in room.infotexts[0], room.infotexts[0]
    one, two = t["one"], t["two"]
    report.add(Row(f"{family}.refiner", f"{family} {plan.size[family]}px b1 refiner at 0.5 vs one model", "s",
                   two.seconds, one.seconds, two.seconds / one.seconds, None, two.peak_gb, one.peak_gb,
                   "both models on the GPU"))
    report.add(Row(f"{family}.refiner_parked", f"{family} refiner parking on each switch vs room for both", "s",
                   parked_t.seconds, two.seconds, parked_t.seconds / two.seconds, None, parked_t.peak_gb, two.peak_gb,
                   f"same image: {'yes' if diff == 0 else f'max diff {diff}/255'}"))


def check_offload(plan: Plan, report: Report, pipe: Any, family: str, mode: str) -> None:
    """--medvram (model CPU offload) / --lowvram (sequential offload): time and peak VRAM of one
    image vs no offload at the same steps. After medvram the pipeline is back on the GPU."""
    steps = plan.steps if mode == "medvram" else min(plan.steps, 4)  # lowvram is slow by design
    plain = _engine(plan, pipe, family)
    try:
        base = single(plan, plain, family, steps=steps, runs=1)
    finally:
        plain.unload()
    engine = _engine(plan, pipe, family, memory=mode)
    try:
        t = single(plan, engine, family, steps=steps, runs=1)
    finally:
        engine.unload()
        if mode == "medvram":  # sequential offload's hooks cannot all be undone: lowvram runs last
            pipe.remove_all_hooks()
            pipe.to(plan.device)
    vram = f"; VRAM ratio {t.peak_gb / base.peak_gb:.2f}" if t.peak_gb and base.peak_gb else ""
    report.add(Row(f"{family}.{mode}", f"{family} {plan.size[family]}px b1 --{mode} vs no offload", "s",
                   t.seconds, base.seconds, t.seconds / base.seconds, None, t.peak_gb, base.peak_gb,
                   f"{steps} steps{vram}"))


def check_training(plan: Plan, report: Report, pipe: Any, family: str) -> None:
    """Training (issue 13) fills this row through a hook, so this script needs no change when it lands:

        sdcloud.training.benchmark.measure_training_step(pipe, *, family, resolution, batch, steps,
                                                         device, dtype) -> dict

    ``pipe`` is the random real-size pipeline on ``device``; the hook trains its LoRA for ``steps``
    steps and returns ``{"steps_per_s": float, "baseline_steps_per_s": float | None,
    "peak_vram_gb": float | None, "note": str}`` (baseline: a bare diffusers + peft loop)."""
    key, check = f"{family}.train", f"{family} training step (LoRA, b1)"
    module_name, attr = TRAINING_HOOK
    for name, why in (("sdcloud.training", "training is not built yet (issue 13)"),
                      (module_name, f"sdcloud.training has no {module_name} (the hook is described in "
                                    "bench/gpu_check.py)")):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # training is there but one of its own imports is missing: a failure
                raise
            report.add(Row(key, check, status="skipped", note=why))
            return
    hook = getattr(module, attr, None)
    if hook is None:
        report.add(Row(key, check, status="skipped", note=f"{module_name} has no {attr}"))
        return
    _reset_peak(plan.device)
    # the tiny SD1.5 (4 levels of 32 channels, 32 groups) has 1x1 maps at 64 px: GroupNorm refuses
    # those in training mode, so its training row runs at 128 px
    size = plan.size[family] * (2 if plan.tiny else 1)
    res = hook(pipe, family=family, resolution=size, batch=1, steps=plan.steps * 2,
               device=plan.device, dtype=pipe.unet.dtype)
    ours, base = float(res["steps_per_s"]), res.get("baseline_steps_per_s")
    report.add(Row(key, check, "step/s", ours, base, float(base) / ours if base else None,
                   plan.target(TARGET_TRAIN) if base else None, res.get("peak_vram_gb") or _peak_gb(plan.device), None,
                   str(res.get("note", ""))))


def run_family(plan: Plan, report: Report, family: str) -> None:
    import torch

    want = set(plan.sections)
    started = time.perf_counter()
    pipe = build_pipeline(family, plan.tiny, plan.device,
                          torch.float16 if plan.device.type == "cuda" else torch.float32)
    weights = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                  for p in m.parameters())
    print(f"-- {family}: built {weights / 1e9:.2f}B random parameters in {time.perf_counter() - started:.1f} s",
          flush=True)
    engine = _engine(plan, pipe, family)
    timings: dict[int, Timing] = {}
    try:
        for batch in (1, 4) if "engine" in want else (1,) if "bf16" in want else ():
            timing = guarded(report, f"{family}.engine.b{batch}", f"{family} b{batch} engine vs diffusers",
                             lambda b=batch: engine_vs_raw(plan, report, engine, pipe, family, b, plan.dtype))
            if timing is not None:
                timings[batch] = timing
        if "vae" in want:
            guarded(report, f"{family}.vae_fallback", f"{family} fp16 VAE NaN fallback",
                    lambda: check_vae_fallback(plan, report, engine, pipe, family))
    finally:
        engine.unload()
    b1 = timings.get(1)
    # train before the offload rows, lowvram last: sequential offload leaves the pipeline unusable
    checks: dict[str, Callable[[], None]] = {
        "compile": lambda: check_compile(plan, report, pipe, family),
        "bf16": lambda: check_bf16(plan, report, pipe, family, b1),
        "train": lambda: check_training(plan, report, pipe, family),
        "refiner": lambda: check_refiner(plan, report, pipe, family),
        "medvram": lambda: check_offload(plan, report, pipe, family, "medvram"),
        "lowvram": lambda: check_offload(plan, report, pipe, family, "lowvram"),
    }
    for section, fn in checks.items():
        if section not in want:
            continue
        key, check = f"{family}.{section}", f"{family} {section}"
        if section in CUDA_ONLY and plan.device.type != "cuda" and not (section == "compile" and plan.compile):
            report.add(Row(key, check, status="skipped", note=CUDA_ONLY[section]))
        elif section == "compile" and not plan.compile:
            report.add(Row(key, check, status="skipped", note="--compile off"))
        elif section in ("compile", "bf16", "lowvram") and not plan.wide(family):
            report.add(Row(key, check, status="skipped", note="full run only (without --quick)"))
        elif section == "bf16" and b1 is None:
            report.add(Row(key, check, status="skipped", note="needs the b1 fp16 engine row, which failed"))
        else:
            guarded(report, key, check, fn)


def run_merge(plan: Plan, report: Report, family: str) -> None:
    """The streaming merge on ``plan.device`` (``sdcloud ckpt merge --device cuda``) vs reading
    both inputs and writing one output (the I/O floor), on random real-size checkpoints."""
    from merge_memory import _copy, generate

    from sdcloud.checkpoints.hashing import HashCache
    from sdcloud.checkpoints.merge import MergeOptions, merge_checkpoints
    from sdcloud.checkpoints.safetensors_header import read_header

    folder = Path(tempfile.mkdtemp(prefix=f"merge-{family}-", dir=plan.workdir))
    a, b, out = folder / "a.safetensors", folder / "b.safetensors", folder / "out.safetensors"
    started = time.perf_counter()
    size = generate(a, family, 1e-4 if plan.tiny else 1.0, 1)
    generate(b, family, 1e-4 if plan.tiny else 1.0, 2)
    cache = HashCache(folder / "hashes.json")
    cache.get(a), cache.get(b)  # hashed once, as in normal use (the merge records them)
    print(f"-- merge {family}: two {size / 1e9:.2f} GB inputs written and hashed in "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    def timed(fn: Callable[[], Any]) -> tuple[float, float | None]:
        out.unlink(missing_ok=True)
        _reset_peak(plan.device)
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, _peak_gb(plan.device)

    def merge_on(device: str) -> Callable[[], Any]:
        return lambda: merge_checkpoints(MergeOptions(a=a, b=b, output=out, alpha=0.5, dtype="fp16", device=device),
                                         hash_cache=cache)

    try:
        copy_s, _ = timed(lambda: _copy(a, b, out, direct=False))
        merge_s, vram = timed(merge_on(plan.device.type))
        same_keys = set(read_header(out).shapes) == set(read_header(a).shapes)
        report.add(Row(f"merge.{family}.{plan.device.type}",
                       f"merge {family} ({size / 1e9:.2f} GB) --device {plan.device.type} vs copy", "s",
                       merge_s, copy_s, merge_s / copy_s, plan.target(TARGET_MERGE), vram, None,
                       "output has every key of A" if same_keys else "output keys differ from A",
                       "ok" if same_keys else "failed"))
        if plan.device.type == "cuda" and not plan.quick:
            cpu_s, _ = timed(merge_on("cpu"))
            report.add(Row(f"merge.{family}.cuda_vs_cpu", f"merge {family} --device cuda vs --device cpu", "s",
                           merge_s, cpu_s, merge_s / cpu_s))
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def guarded(report: Report, key: str, check: str, fn: Callable[[], Any]) -> Any:
    """Run one check and return what it returns; an error (OOM, a missing kernel) becomes a failed
    row and ``None``, not the end of the run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported and the run goes on
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        report.add(Row(key, check, status="failed", note=f"{type(exc).__name__}: {msg}"))
        return None


# ---- the planner's throughput data ----------------------------------------------------------


def gpu_label(device_name: str) -> str:
    """The price catalog's name for this GPU (``A100-80GB``), else the model token (``H100``)."""
    from sdcloud.cloud.price_catalog import load_price_catalog

    known = load_price_catalog().gpu_for_device_name(device_name)
    if known:
        return known
    words = [w for w in device_name.replace("NVIDIA", "").replace("GeForce", "").split() if w]
    out: list[str] = []
    for w in words:
        out.append(w)
        if any(ch.isdigit() for ch in w):
            break
    return " ".join(out) or device_name


def write_throughput(path: Path, gpu: str, speeds: dict[str, float], source: str) -> None:
    """Put measured batch-1 fp16 it/s at each family's reference size into the planner's data:
    a catalog file (``{"throughput": {"families": ...}}``, for ``sdcloud plan --catalog`` or
    ``<data-dir>/catalog.json``; created if missing) or the packaged table itself
    (``src/sdcloud/cloud/data/throughput.json``, recognised by its top-level ``families``)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    table = data if "families" in data else data.setdefault("throughput", {})
    for family, it_s in speeds.items():
        size = FAMILIES[family][1]
        fam = table.setdefault("families", {}).setdefault(family, {"width": size, "height": size})
        fam.setdefault("gpus", {})[gpu] = {"it_s": round(it_s, 2), "source": source}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def measured_speeds(rows: list[Row]) -> dict[str, float]:
    """Our engine's batch-1 fp16 it/s (no compile) per family: what the planner's table holds."""
    return {r.key.split(".")[0]: r.ours for r in rows
            if r.key.endswith(".engine.b1") and r.status == "ok" and r.ours}


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join((__doc__ or "").splitlines()[2:]))
    ap.add_argument("--quick", action="store_true", help="fewer steps and runs, heavy rows on SD 1.5 only "
                    "(< 5 min on an H100-class GPU)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="write every row (and the machine) as JSON")
    ap.add_argument("--only", default=",".join(SECTIONS), metavar="LIST",
                    help=f"sections to run, comma-separated (default all: {','.join(SECTIONS)})")
    ap.add_argument("--families", default="sd15,sdxl", metavar="LIST", help="sd15,sdxl (default both)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="demo-model widths at 64x64 (default without CUDA)")
    ap.add_argument("--steps", type=int, help="sampling steps (default 20; 10 with --quick; 2 tiny)")
    ap.add_argument("--runs", type=int, help="timed runs per call after one warm-up (default 5; 2 --quick; 1 tiny)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="the torch.compile rows: auto = on CUDA only")
    ap.add_argument("--workdir", type=Path, help="where the merge writes its checkpoints (default: a temp dir; "
                    "a full SDXL merge needs ~21 GB)")
    ap.add_argument("--write-throughput", type=Path, metavar="PATH",
                    help="merge the measured b1 fp16 it/s into this catalog file (or the packaged throughput.json)")
    ap.add_argument("--gpu-name", help="the GPU's name in the planner's data (default: from the device)")
    ap.add_argument("--from-json", type=Path, metavar="PATH",
                    help="run nothing: print the table of a saved --json file (and --write-throughput from it)")
    ap.add_argument("--markdown", action="store_true", help="print the closing table as Markdown (for the docs)")
    return ap.parse_args(argv)


def make_plan(args: argparse.Namespace, workdir: Path) -> Plan:
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA GPU")
    tiny = args.tiny or device.type != "cuda"
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = [s for s in sections if s not in SECTIONS] + [f for f in families if f not in FAMILIES]
    if bad:
        raise SystemExit(f"gpu_check: unknown section or family {', '.join(bad)}; sections: "
                         f"{', '.join(SECTIONS)}; families: {', '.join(FAMILIES)}")
    if args.write_throughput and tiny:
        raise SystemExit(TINY_THROUGHPUT)
    steps = args.steps or (2 if tiny else 10 if args.quick else 20)
    if steps < 2:
        raise SystemExit("gpu_check: --steps must be at least 2 (it/s is measured between steps)")
    return Plan(device=device, tiny=tiny, quick=args.quick or tiny, sections=sections, families=families,
                steps=steps, runs=args.runs or (1 if tiny else 2 if args.quick else 5),
                compile=args.compile == "on" or (args.compile == "auto" and device.type == "cuda"),
                workdir=workdir, size={f: 64 if tiny else FAMILIES[f][1] for f in FAMILIES})


def header(plan: Plan) -> dict[str, Any]:
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu or "cpu",
            "gpu": gpu_label(gpu) if gpu else None, "torch": torch.__version__, "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__, "tiny": plan.tiny, "quick": plan.quick, "steps": plan.steps,
            "runs": plan.runs, "sections": list(plan.sections), "families": list(plan.families)}


def markdown(rows: list[Row]) -> str:
    out = ["| check | ours | baseline | ratio (target) | peak VRAM ours / baseline | note |",
           "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.status != "ok":
            out.append(f"| {r.check} | | | | | {r.status}: {r.note} |")
            continue
        ratio = "" if r.ratio is None else f"{r.ratio:.3f}" + ("" if r.target is None else
                                                                f" (<= {r.target}) {'PASS' if r.passed else 'FAIL'}")
        vram = "" if r.vram_gb is None else f"{r.vram_gb:.2f}" + (
            "" if r.base_vram_gb is None else f" / {r.base_vram_gb:.2f}") + " GB"
        out.append(f"| {r.check} | {_num(r.ours, r.unit)} | {_num(r.base, r.unit)} | {ratio} | {vram} | {r.note} |")
    return "\n".join(out)


def finish(args: argparse.Namespace, head: dict[str, Any], rows: list[Row], seconds: float | None) -> int:
    """The closing table, the planner's data, the exit status (1 if any check failed)."""
    took = f", {seconds:.0f} s" if seconds is not None else ""
    print(f"\n== sdcloud GPU check: {head['device']}, {head['date']}{took}, torch {head['torch']}, diffusers "
          f"{head['diffusers']} (ratio = our cost / the baseline's; lower is better)")
    if args.markdown:
        print(markdown(rows))
    else:
        print(f"{'check':<50} {'ours':>13} {'baseline':>13}")
        for row in rows:
            print(format_row(row))
    if args.write_throughput:
        if head.get("tiny"):
            raise SystemExit(TINY_THROUGHPUT)
        speeds = measured_speeds(rows)
        if not speeds:
            print("no batch-1 engine row succeeded: nothing written to the throughput data")
        else:
            gpu = args.gpu_name or head["gpu"]
            try:
                write_throughput(args.write_throughput, gpu, speeds,
                                 f"bench/gpu_check.py {head['date']} ({head['device']}, random weights, torch "
                                 f"{head['torch']}, diffusers {head['diffusers']}, Euler, {head['steps']} steps)")
            except (OSError, ValueError, AttributeError) as exc:
                raise SystemExit(f"gpu_check: cannot update {args.write_throughput}: {exc}") from None
            print(f"throughput for {gpu} ({', '.join(f'{k} {v:.2f} it/s' for k, v in speeds.items())}) written "
                  f"to {args.write_throughput}")
    return 1 if any(r.status == "failed" for r in rows) else 0


def load_json(path: Path) -> tuple[dict[str, Any], list[Row]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = set(Row.__dataclass_fields__)
        rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in data.pop("rows")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"gpu_check: {path} is not a gpu_check JSON file ({exc})") from None
    return data, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path, what in ((args.json, "--json"), (args.write_throughput, "--write-throughput")):
        if path is not None and not path.parent.is_dir():
            raise SystemExit(f"gpu_check: {what} {path}: folder {path.parent} does not exist")
    if args.workdir is not None and not args.workdir.is_dir():
        raise SystemExit(f"gpu_check: --workdir {args.workdir} is not a folder")
    if args.from_json:
        return finish(args, *load_json(args.from_json), None)
    with tempfile.TemporaryDirectory(prefix="sdcloud-gpu-check-", dir=args.workdir) as tmp:
        plan = make_plan(args, Path(tmp))
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        report = Report(args.json, header(plan))
        h = report.header
        print(f"sdcloud GPU check: {h['device']}, torch {h['torch']} (CUDA {h['cuda']}), diffusers {h['diffusers']}, "
              f"{h['date']}; {'tiny smoke test' if plan.tiny else 'real size'}, {plan.steps} steps, "
              f"{plan.runs} runs{', quick' if args.quick else ''}", flush=True)
        report.save()
        started = time.perf_counter()
        for family in plan.families:
            if set(plan.sections) - {"merge"}:
                guarded(report, f"{family}.build", f"{family} pipeline", lambda f=family: run_family(plan, report, f))
                _reset_peak(plan.device)  # the family's pipeline is gone: free its VRAM before the next
        if "merge" in plan.sections:
            for family in plan.families if not plan.quick or plan.tiny else ("sd15",):
                guarded(report, f"merge.{family}", f"merge {family}", lambda f=family: run_merge(plan, report, f))
    return finish(args, report.header, report.rows, time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
