"""The weight difference a kohya / LyCORIS network module adds, as A1111's built-in Lora
extension computes it (``network_lora``, ``network_hada``, ``network_lokr``, ``network_full``):

- LoRA / LoCon: ``up @ down`` (conv kernels over the rank axis; Tucker ``lora_mid`` rebuilt),
  scaled by ``alpha / rank``;
- LoHa: ``(w1a @ w1b) * (w2a @ w2b)`` (Tucker ``hada_t1/t2`` rebuilt), scaled by ``alpha / rank``;
- LoKr: ``kron(w1, w2)`` with either factor possibly ``a @ b`` (``lokr_t2`` Tucker), scaled by
  ``alpha / rank`` when a factor is decomposed, else 1;
- full diff: ``diff`` (and ``diff_b`` for the bias), scale 1.

Pure tensor math over one module's tensors; the callers (generation, ``ckpt lora-bake``)
decide where the result goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdcloud.errors import Unsupported

KINDS = ("LoRA", "LoHa", "LoKr", "full")
_REFUSED = {"dora_scale": "DoRA", "oft_blocks": "OFT", "oft_diag": "OFT", "on_input": "IA3", "w_norm": "norm",
            "a1.weight": "GLoRA"}


@dataclass
class NetworkModule:
    """One targeted layer's tensors from a network file (suffixes after the module name)."""

    name: str
    parts: dict[str, torch.Tensor]

    @property
    def kind(self) -> str:
        p = self.parts
        for marker, kind in _REFUSED.items():
            if any(marker in k for k in p):
                raise Unsupported(f"module '{self.name}' is a {kind} module, which is not supported")
        if "hada_w1_a" in p:
            return "LoHa"
        if any(k.startswith("lokr_") for k in p):
            return "LoKr"
        if "diff" in p:
            return "full"
        if "lora_up.weight" in p and "lora_down.weight" in p:
            return "LoRA"
        raise Unsupported(f"module '{self.name}' has {sorted(p)}: not a LoRA/LoCon/LoHa/LoKr/full module")

    def alpha(self) -> float | None:
        a = self.parts.get("alpha")
        return float(a.item()) if a is not None else None


def group_modules(tensors: dict[str, torch.Tensor]) -> dict[str, NetworkModule]:
    """``lora_unet_x.lora_up.weight`` ... -> {``lora_unet_x``: NetworkModule}."""
    out: dict[str, NetworkModule] = {}
    for key, value in tensors.items():
        module, _, part = key.partition(".")
        out.setdefault(module, NetworkModule(module, {})).parts[part] = value
    return out


def _tucker(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """A1111 ``rebuild_tucker``: (out, in, k, k) from a core ``t`` and two factor matrices."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def _mm(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``up @ down`` for linear and conv (A1111's rebuild_conventional); reshaped by the caller."""
    return up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)


def _kron_factor(p: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, int | None]:
    whole = p.get(f"lokr_w{n}")
    if whole is not None:
        return whole.float(), None
    a, b = p[f"lokr_w{n}_a"].float(), p[f"lokr_w{n}_b"].float()
    t = p.get(f"lokr_t{n}")
    if t is not None:
        return _tucker(t.float(), a, b), b.shape[0]
    return a @ b if b.dim() == 2 else torch.einsum("or,rikl->oikl", a, b), b.shape[0]


def module_delta(module: NetworkModule, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight delta shaped like the target weight ``shape``, bias delta or None), in float32,
    with the module's own scale (alpha / rank) applied, not the user's multiplier."""
    try:
        return _delta(module, shape)
    except (KeyError, RuntimeError) as exc:  # a part missing, or factors whose shapes do not chain
        raise Unsupported(f"module '{module.name}' ({module.kind}) is incomplete or inconsistent: "
                          f"{str(exc).splitlines()[0][:120]}") from None


def _delta(module: NetworkModule, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    p = {k: v.float() for k, v in module.parts.items()}
    kind = module.kind
    alpha = module.alpha()
    rank: int | None = None
    bias = None
    if kind == "LoRA":
        up, down = p["lora_up.weight"], p["lora_down.weight"]
        rank = down.shape[0]
        mid = p.get("lora_mid.weight")
        if mid is not None:  # LoCon with a Tucker (CP) core: einsum as A1111's rebuild_cp_decomposition
            delta = torch.einsum("n m k l, i n, m j -> i j k l", mid, up.reshape(up.shape[0], -1),
                                 down.reshape(down.shape[0], -1))
        else:
            delta = _mm(up, down)
    elif kind == "LoHa":
        w1a, w1b, w2a, w2b = p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"]
        rank = w1b.shape[0]
        if "hada_t1" in p:
            delta = _tucker(p["hada_t1"], w1a, w1b) * _tucker(p["hada_t2"], w2a, w2b)
        else:
            delta = (w1a @ w1b) * (w2a @ w2b)
    elif kind == "LoKr":
        w1, r1 = _kron_factor(p, 1)
        w2, r2 = _kron_factor(p, 2)
        rank = r1 if r1 is not None else r2
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        delta = torch.kron(w1, w2)
    else:
        delta = p["diff"]
        bias = p.get("diff_b")
    if delta.numel() != _numel(shape) or delta.shape[0] != shape[0]:
        raise Unsupported(f"module '{module.name}' ({kind}, {tuple(delta.shape)}) does not fit a weight of "
                          f"shape {tuple(shape)}: the network is for another model")
    if "scale" in p:  # A1111's calc_scale: an explicit scale wins, then alpha / rank, else 1
        scale = float(p["scale"].item())
    else:
        scale = alpha / rank if alpha is not None and rank else 1.0
    return delta.reshape(shape) * scale, (bias * scale if bias is not None else None)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
