"""Our own code for the small weight-based preprocessors, so they run everywhere (controlnet_aux
imports torchvision, which CPU-torch machines lack): the lineart generator of "informative
drawings" (lllyasviel's ``sk_model.pth`` / ``sk_model2.pth``: lineart_realistic, lineart_coarse)
and ControlNet's Apache-2 HED (``ControlNetHED.pth``: softedge_hed, softedge_hedsafe). Layers are
named as in those files so they load with ``strict=True``; the pre/post-processing follows
sd-webui-controlnet (lineart: ``255 - line``; HED: sigmoid of the mean of the five side outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
                                        nn.ReLU(inplace=True), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3),
                                        nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """The informative-drawings generator (3 residual blocks in both of lllyasviel's files)."""

    def __init__(self, blocks: int = 3) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU(True))
        self.model1 = nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.InstanceNorm2d(128), nn.ReLU(True),
                                    nn.Conv2d(128, 256, 3, stride=2, padding=1), nn.InstanceNorm2d(256), nn.ReLU(True))
        self.model2 = nn.Sequential(*[_Residual(256) for _ in range(blocks)])
        self.model3 = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(128),
            nn.ReLU(True), nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(64), nn.ReLU(True))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


class _DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers)])
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: torch.Tensor, down: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(x, 2, 2) if down else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class HED(nn.Module):
    """ControlNet's Apache-2 HED (RGB input, 0-255)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = _DoubleConv(3, 64, 2)
        self.block2 = _DoubleConv(64, 128, 2)
        self.block3 = _DoubleConv(128, 256, 3)
        self.block4 = _DoubleConv(256, 512, 3)
        self.block5 = _DoubleConv(512, 512, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, p1 = self.block1(x - self.norm)
        h, p2 = self.block2(h, True)
        h, p3 = self.block3(h, True)
        h, p4 = self.block4(h, True)
        _, p5 = self.block5(h, True)
        return [p1, p2, p3, p4, p5]


def build(kind: str, state: dict[str, torch.Tensor], name: str) -> nn.Module:
    """``kind`` (``lineart`` or ``hed``) loaded with ``state``; a file of another network is
    ``Unsupported`` in one line naming it."""
    from sdcloud.errors import Unsupported

    net: nn.Module = LineartGenerator() if kind == "lineart" else HED()
    want = net.state_dict()
    bad = [k for k, v in want.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        first = ", ".join(list(state)[:3])
        raise Unsupported(f"{name}: not the {kind} annotator this module needs ({len(state)} tensors, "
                          f"first keys {first}; missing or misshaped '{bad[0]}')")
    net.load_state_dict({k: state[k] for k in want}, strict=True)
    return net.eval().requires_grad_(False)


_CACHE: dict[tuple[str, Path], nn.Module] = {}


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load(kind: str, path: Path) -> nn.Module:
    """The network from ``path`` (kept: at most 4 annotators stay loaded)."""
    key = (kind, path)
    if key not in _CACHE:
        from sdcloud.upscalers.loading import read_state_dict

        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build(kind, read_state_dict(path), path.name).to(_device())
    return _CACHE[key]


def lineart(img: np.ndarray, path: Path) -> np.ndarray:
    """White lines on black (sd-webui-controlnet's ``255 - line``) of an RGB uint8 image."""
    net = load("lineart", path)
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(_device())
    with torch.no_grad():
        line = net(x)[0, 0].float().cpu().numpy()
    return 255 - (line * 255.0).clip(0, 255).astype(np.uint8)


def hed(img: np.ndarray, path: Path, safe: bool = False) -> np.ndarray:
    """Soft edges (0-255) of an RGB uint8 image; ``safe`` quantises them (softedge_hedsafe)."""
    net = load("hed", path)
    h, w = img.shape[:2]
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None].to(_device())
    with torch.no_grad():
        sides = [F.interpolate(p.float(), size=(h, w), mode="bilinear", align_corners=False)
                 for p in net(x)]
    edge = torch.sigmoid(torch.cat(sides, 1).mean(1)[0]).cpu().numpy().astype(np.float64)
    if safe:  # the extension's safe_step(step=2)
        edge = (edge * 3.0).astype(np.int32).astype(np.float64) / 2.0
    return (edge * 255.0).clip(0, 255).astype(np.uint8)
