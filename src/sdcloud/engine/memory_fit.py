"""Does a request fit the memory of the device it runs on? A request that cannot fit is refused
with a 400 before any work, instead of an out-of-memory error after minutes of sampling (or, on a
CPU box with ~12 GB of RAM, the kernel killing the whole server).

The estimate is a lower bound on the largest working set of one step, from the loaded model's
own config: the UNet's skip connections and working tensors at each resolution (batch doubled
for the negative prompt), and the VAE decoder's full-resolution feature maps for the whole batch.
It leaves out weights (already in memory) and attention scratch, so it refuses only what cannot
fit; what passes may still run out on a crowded GPU (that job then fails with its reason).
``limits.max_memory_mb`` caps the memory counted as free (a GPU shared with other work)."""

from __future__ import annotations

from typing import Any

from sdcloud.engine.request_rules import hires_target
from sdcloud.engine.types import GenerationRequest
from sdcloud.errors import BadRequest

GB = 1024**3


def step_bytes(unet_config: Any, vae_config: Any, width: int, height: int, batch: int, cfg: bool,
               dtype_bytes: int, vae_tiled: bool = False) -> int:
    """The lower-bound working set of one UNet step and of the VAE decode at ``width`` x ``height``."""
    channels = list(_get(unet_config, "block_out_channels", (320, 640, 1280, 1280)))
    layers = _get(unet_config, "layers_per_block", 2)
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers] * len(channels)
    latent = (width // 8) * (height // 8)
    runs = batch * (2 if cfg else 1)
    maps = [ch * latent // 4**i for i, ch in enumerate(channels)]
    unet = (sum((n + 1) * m for n, m in zip(layers, maps, strict=False)) + 4 * max(maps)) * runs * dtype_bytes
    vae = 0
    if not vae_tiled:
        vae_channels = list(_get(vae_config, "block_out_channels", (128,)))
        vae = 3 * vae_channels[0] * width * height * batch * dtype_bytes
    return max(unet, vae)


def free_bytes(device: Any, cap_mb: int = 0) -> int | None:
    """Memory free for work on ``device`` (CUDA: free plus the allocator's unused cache; CPU: the
    RAM the system calls available), capped at ``cap_mb`` when set; None where unknown."""
    free: int | None = None
    kind = getattr(device, "type", str(device))
    try:
        if kind == "cuda":
            import torch

            free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) \
                - torch.cuda.memory_allocated(device)
        elif kind == "cpu":
            import psutil

            free = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001  no reading: no refusal
        free = None
    if cap_mb:
        free = min(free, cap_mb * 1024**2) if free is not None else cap_mb * 1024**2
    return free


def check_fits(ctx: Any, req: GenerationRequest, limits: Any) -> None:
    """Raise ``BadRequest`` when a pass of ``req`` cannot fit in the free memory of ``ctx.device``."""
    free = free_bytes(ctx.device, getattr(limits, "max_memory_mb", 0))
    if free is None:
        return
    pipe = ctx.pipe
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    vae = getattr(pipe, "vae", None)
    if unet_config is None or vae is None:
        return
    tiled = bool(getattr(vae, "use_tiling", False))
    dtype_bytes = getattr(ctx.dtype, "itemsize", 4)
    passes = [(req.width, req.height)]
    if req.enable_hr and not req.is_img2img:
        passes.append(hires_target(req))
    for width, height in passes:
        need = step_bytes(unet_config, vae.config, width, height, req.batch_size, req.cfg_scale != 1,
                          dtype_bytes, tiled)
        if need > free:
            raise BadRequest(
                f"{width}x{height} with batch_size {req.batch_size} needs at least {need / GB:.1f} GB of "
                f"memory for one step; {free / GB:.1f} GB is free on this {_device_name(ctx.device)}: "
                "lower the size or batch_size (or turn on VAE tiling)")


def _get(config: Any, key: str, default: Any) -> Any:
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def _device_name(device: Any) -> str:
    return "GPU" if getattr(device, "type", str(device)) == "cuda" else "machine"
