"""Our own implementations of the two upscaler families most A1111 users have, so they run
where spandrel cannot be imported (its torchvision import fails beside a CPU torch wheel):

- ESRGAN / RRDBNet: the original ESRGAN layout (``model.0`` .. ``model.10``, e.g.
  4x-UltraSharp, 4x_foolhardy_Remacri) and basicsr's layout (``conv_first``, ``body.N.rdbK``,
  e.g. RealESRGAN_x4plus, x4plus_anime_6B, x2plus with pixel-unshuffle input).
- Real-ESRGAN compact (SRVGGNetCompact: realesr-general-x4v3, realesr-animevideov3).

Each ``detect_*`` reads the shapes from a state dict and returns the hyper-parameters, or
None when the keys are not that family's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# -- ESRGAN / RRDBNet --------------------------------------------------------------------


class _DenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = _DenseBlock(nf, gc), _DenseBlock(nf, gc), _DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


@dataclass(frozen=True)
class RRDBParams:
    in_nc: int
    out_nc: int
    nf: int
    nb: int
    gc: int
    num_up: int  # nearest x2 + conv stages
    unshuffle: int  # pixel-unshuffle factor on the input (basicsr x2plus: 2), 1 for none

    @property
    def scale(self) -> int:
        return 2**self.num_up // self.unshuffle


class RRDBNet(nn.Module):
    """basicsr's RRDBNet, generalised to any number of x2 upsampling stages."""

    def __init__(self, p: RRDBParams) -> None:
        super().__init__()
        self.params = p
        self.conv_first = nn.Conv2d(p.in_nc * p.unshuffle**2, p.nf, 3, 1, 1)
        self.body = nn.Sequential(*[_RRDB(p.nf, p.gc) for _ in range(p.nb)])
        self.conv_body = nn.Conv2d(p.nf, p.nf, 3, 1, 1)
        self.ups = nn.ModuleList([nn.Conv2d(p.nf, p.nf, 3, 1, 1) for _ in range(p.num_up)])
        self.conv_hr = nn.Conv2d(p.nf, p.nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(p.nf, p.out_nc, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.params.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for up in self.ups:
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")


def esrgan_old_to_new(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Rename the original ESRGAN keys (``model.N...``) to basicsr's; None if not that layout."""
    if "model.0.weight" not in state:
        return None
    body = {int(m.group(1)) for k in state if (m := _OLD_BODY.match(k))}
    if not body:
        return None
    nb = max(body) + 1
    top = sorted({int(k.split(".")[1]) for k in state if re.match(r"^model\.\d+\.weight$", k)})
    # model.0 conv_first, model.1 trunk; then (upsample, conv, act) per x2, then hr conv, act, last conv
    convs = [i for i in top if i >= 3]
    if len(convs) < 2:
        return None
    ups, hr, last = convs[:-2], convs[-2], convs[-1]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := _OLD_BODY.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
            continue
        parts = key.split(".")
        if key.startswith(f"model.1.sub.{nb}."):
            out[f"conv_body.{parts[-1]}"] = value
        elif parts[1] == "0":
            out[f"conv_first.{parts[-1]}"] = value
        elif len(parts) == 3 and int(parts[1]) in ups:
            out[f"ups.{ups.index(int(parts[1]))}.{parts[-1]}"] = value
        elif len(parts) == 3 and int(parts[1]) == hr:
            out[f"conv_hr.{parts[-1]}"] = value
        elif len(parts) == 3 and int(parts[1]) == last:
            out[f"conv_last.{parts[-1]}"] = value
        else:
            return None
    return out


def basicsr_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """basicsr names its two upsampling convs ``conv_up1``/``conv_up2``; we keep a list."""
    out = {}
    for key, value in state.items():
        if m := re.match(r"^conv_up(\d+)\.(weight|bias)$", key):
            out[f"ups.{int(m.group(1)) - 1}.{m.group(2)}"] = value
        else:
            out[key] = value
    return out


def detect_rrdb(state: dict[str, torch.Tensor]) -> tuple[RRDBParams, dict[str, torch.Tensor]] | None:
    """ESRGAN in either layout: (params, state dict in our names), or None."""
    ours = esrgan_old_to_new(state)
    if ours is None:
        if "conv_first.weight" not in state or "body.0.rdb1.conv1.weight" not in state:
            return None
        ours = basicsr_to_ours(state)
    try:
        first, last = ours["conv_first.weight"], ours["conv_last.weight"]
        nf, gc = first.shape[0], ours["body.0.rdb1.conv1.weight"].shape[0]
    except KeyError:
        return None
    nb = len({k.split(".")[1] for k in ours if k.startswith("body.")})
    num_up = len({k.split(".")[1] for k in ours if k.startswith("ups.")})
    out_nc, in_ch = last.shape[0], first.shape[1]
    unshuffle = 1
    if in_ch != out_nc and in_ch % out_nc == 0 and math.isqrt(in_ch // out_nc) ** 2 == in_ch // out_nc:
        unshuffle = math.isqrt(in_ch // out_nc)  # basicsr x2 (12 = 3 * 2^2) and x1 (48) models
    return RRDBParams(in_ch // unshuffle**2, out_nc, nf, nb, gc, num_up, unshuffle), ours


# -- Real-ESRGAN compact (SRVGGNetCompact) ------------------------------------------------------


@dataclass(frozen=True)
class CompactParams:
    in_nc: int
    out_nc: int
    nf: int
    num_conv: int
    scale: int


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact net: convs with PReLU, pixel shuffle, plus the nearest-upsampled input."""

    def __init__(self, p: CompactParams) -> None:
        super().__init__()
        self.params = p
        layers: list[nn.Module] = [nn.Conv2d(p.in_nc, p.nf, 3, 1, 1), nn.PReLU(p.nf)]
        for _ in range(p.num_conv):
            layers += [nn.Conv2d(p.nf, p.nf, 3, 1, 1), nn.PReLU(p.nf)]
        layers.append(nn.Conv2d(p.nf, p.out_nc * p.scale**2, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.params.scale)
        return out + F.interpolate(x, scale_factor=self.params.scale, mode="nearest")


def detect_compact(state: dict[str, torch.Tensor]) -> CompactParams | None:
    idx = sorted({int(k.split(".")[1]) for k in state if re.match(r"^body\.\d+\.weight$", k)})
    if len(idx) < 3 or idx != list(range(len(idx))) or any(k.startswith("conv_first") for k in state):
        return None
    convs = [i for i in idx if state[f"body.{i}.weight"].dim() == 4]
    prelus = [i for i in idx if state[f"body.{i}.weight"].dim() == 1]
    if convs != list(range(0, len(idx), 2)) or prelus != list(range(1, len(idx) - 1, 2)):
        return None
    first, last = state["body.0.weight"], state[f"body.{idx[-1]}.weight"]
    in_nc, nf = first.shape[1], first.shape[0]
    out_nc = in_nc
    ratio = last.shape[0] // out_nc
    scale = math.isqrt(ratio)
    if scale * scale * out_nc != last.shape[0]:
        return None
    return CompactParams(in_nc, out_nc, nf, len(convs) - 2, scale)
