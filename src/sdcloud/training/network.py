"""The trained network: which modules get LoRA (kohya's choice), injected with peft, and the
kohya key layout and ``ss_*`` metadata of the file A1111, ComfyUI and our engine load.

Targets follow kohya ``networks/lora.py``: every Linear and 1x1 Conv inside the UNet's
``Transformer2DModel`` blocks and the text encoders' ``CLIPAttention``/``CLIPMLP``; with a conv
rank (LoRA-C3Lier / LyCORIS LoCon) also the 3x3 convs (and their Linear/1x1 companions) of
``ResnetBlock2D``/``Downsample2D``/``Upsample2D``. peft's LoRA computes exactly kohya's
``up(down(x)) * alpha / rank`` with ``lora_A`` = ``lora_down`` and ``lora_B`` = ``lora_up``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
ADAPTER = "default"


@dataclass(frozen=True)
class Target:
    component: str  # unet | text_encoder | text_encoder_2
    module: str  # full module name inside the component
    kohya: str  # lora_unet_... / lora_te_... (no suffix)
    conv3x3: bool


def _kohya_te_name(prefix: str, module: str) -> str:
    if not module.startswith("text_model."):  # transformers >= 5.6 flattened CLIPTextModel
        module = "text_model." + module
    return f"{prefix}_{module.replace('.', '_')}"


_SDXL_RULES = [
    (re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$"),
     lambda i, j, r: f"input_blocks.{3 * i + j + 1}.1.{r}"),
    (re.compile(r"^down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$"), lambda i, j, r: f"input_blocks.{3 * i + j + 1}.0.{r}"),
    (re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$"), lambda i, j, r: f"output_blocks.{3 * i + j}.1.{r}"),
    (re.compile(r"^up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$"), lambda i, j, r: f"output_blocks.{3 * i + j}.0.{r}"),
]
_RESNET_PARTS = {"conv1": "in_layers.2", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
                 "time_emb_proj": "emb_layers.1"}


def sdxl_ldm_name(module: str, up_has_attention: list[bool]) -> str:
    """diffusers SDXL UNet module name -> the LDM/SGM name kohya's SDXL LoRAs use."""
    m = re.match(r"^mid_block\.(attentions|resnets)\.(\d+)\.(.*)$", module)
    if m:
        idx = 1 if m.group(1) == "attentions" else 2 * int(m.group(2))
        rest = m.group(3)
        return f"middle_block.{idx}.{_RESNET_PARTS.get(rest, rest) if m.group(1) == 'resnets' else rest}"
    m = re.match(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv$", module)
    if m:
        return f"input_blocks.{3 * (int(m.group(1)) + 1)}.0.op"
    m = re.match(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv$", module)
    if m:
        i = int(m.group(1))
        return f"output_blocks.{3 * i + 2}.{2 if up_has_attention[i] else 1}.conv"
    for pattern, fn in _SDXL_RULES:
        m = pattern.match(module)
        if m:
            rest = m.group(3)
            if ".resnets." in module:
                rest = _RESNET_PARTS.get(rest, rest)
            return fn(int(m.group(1)), int(m.group(2)), rest)
    raise ValueError(f"no SDXL LDM name for UNet module {module}")


def find_targets(pipe: Any, family: str, *, text_encoder: bool, conv: bool) -> list[Target]:
    """The modules kohya would wrap, with their kohya names."""
    out: list[Target] = []
    unet = pipe.unet
    kinds = UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())
    up_attn = [hasattr(b, "attentions") for b in unet.up_blocks]
    seen: set[str] = set()
    for name, module in unet.named_modules():
        if type(module).__name__ not in kinds:
            continue
        for child_name, child in module.named_modules():
            full = f"{name}.{child_name}" if child_name else name
            if full in seen:
                continue
            is_linear = isinstance(child, torch.nn.Linear)
            is_conv = isinstance(child, torch.nn.Conv2d)
            if not (is_linear or is_conv):
                continue
            is_1x1 = is_conv and tuple(child.kernel_size) == (1, 1)
            if is_conv and not is_1x1 and not conv:
                continue
            seen.add(full)
            ldm = sdxl_ldm_name(full, up_attn) if family == "sdxl" else full
            out.append(Target("unet", full, "lora_unet_" + ldm.replace(".", "_"), is_conv and not is_1x1))
    if text_encoder:
        encoders = [("text_encoder", "lora_te1" if family == "sdxl" else "lora_te")]
        if family == "sdxl":
            encoders.append(("text_encoder_2", "lora_te2"))
        for comp, prefix in encoders:
            for name, module in getattr(pipe, comp).named_modules():
                if type(module).__name__ not in TE_TARGETS:
                    continue
                for child_name, child in module.named_modules():
                    if isinstance(child, torch.nn.Linear):
                        full = f"{name}.{child_name}"
                        out.append(Target(comp, full, _kohya_te_name(prefix, full), False))
    return out


def inject(pipe: Any, targets: list[Target], rank: int, alpha: float, conv_rank: int, conv_alpha: float,
           dropout: float) -> dict[str, list[torch.nn.Parameter]]:
    """Add peft LoRA layers to each component; returns the trainable parameters per component.

    Call right after seeding: ``lora_down`` starts Kaiming-uniform, ``lora_up`` at zero (kohya's
    init), so the untrained network is exactly the base model.
    """
    from peft import LoraConfig, inject_adapter_in_model

    params: dict[str, list[torch.nn.Parameter]] = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        names = [t.module for t in targets if t.component == comp]
        if not names:
            continue
        convs = [t.module for t in targets if t.component == comp and t.conv3x3]
        config = LoraConfig(
            r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights=True, target_modules=names,
            rank_pattern={re.escape(n): conv_rank for n in convs},
            alpha_pattern={re.escape(n): conv_alpha for n in convs},
        )
        model = getattr(pipe, comp)
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
        model.requires_grad_(False)
        trainable = []
        for pname, p in model.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:
                p.requires_grad_(True)
                trainable.append(p)
        params[comp] = trainable
    return params


def lora_state(pipe: Any, targets: list[Target]) -> dict[str, torch.Tensor]:
    """The peft LoRA tensors by ``<component>.<param name>`` (for the resume state)."""
    comps = {t.component for t in targets}
    out: dict[str, torch.Tensor] = {}
    for comp in sorted(comps):
        for name, p in getattr(pipe, comp).named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                out[f"{comp}.{name}"] = p.detach()
    return out


def load_lora_state(pipe: Any, state: dict[str, torch.Tensor]) -> None:
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        prefix = comp + "."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            params = dict(getattr(pipe, comp).named_parameters())
            missing = set(part) - set(params)
            if missing:
                raise KeyError(f"{len(missing)} LoRA tensors of the state are not in the model")
            with torch.no_grad():
                for k, v in part.items():
                    params[k].copy_(v)


def kohya_state_dict(pipe: Any, targets: list[Target], rank: int, alpha: float, conv_rank: int,
                     conv_alpha: float, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """``<kohya name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` for every target."""
    out: dict[str, torch.Tensor] = {}
    for t in targets:
        module = getattr(pipe, t.component).get_submodule(t.module)
        down = module.lora_A[ADAPTER].weight.detach()
        up = module.lora_B[ADAPTER].weight.detach()
        out[f"{t.kohya}.lora_down.weight"] = down.to("cpu", dtype).contiguous()
        out[f"{t.kohya}.lora_up.weight"] = up.to("cpu", dtype).contiguous()
        out[f"{t.kohya}.alpha"] = torch.tensor(float(conv_alpha if t.conv3x3 else alpha), dtype=dtype)
    return out


_LYCORIS_DEFAULTS: dict[str, Any] = {}


def _reset_lycoris_presets() -> None:
    """lycoris keeps its target lists as class attributes that each ``create_network`` extends;
    put them back so a second network in the same process starts from the same targets."""
    import copy

    from lycoris.kohya import LycorisNetworkKohya

    if not _LYCORIS_DEFAULTS:
        _LYCORIS_DEFAULTS.update({k: copy.deepcopy(getattr(LycorisNetworkKohya, k)) for k in dir(LycorisNetworkKohya)
                                  if k.isupper() and not callable(getattr(LycorisNetworkKohya, k))})
    for k, v in _LYCORIS_DEFAULTS.items():
        setattr(LycorisNetworkKohya, k, copy.deepcopy(v))


class LycorisNetwork:
    """LoHa/LoKr through ``lycoris-lora``'s kohya network (the layout A1111 and ComfyUI load; our
    engine loads them too, by weight patching in ``engine/network_patch.py``, though diffusers'
    own LoRA loader cannot). SDXL keys keep diffusers module names (the engine maps both)."""

    def __init__(self, pipe: Any, family: str, algo: str, rank: int, alpha: float, conv_rank: int,
                 conv_alpha: float, dropout: float, text_encoder: bool) -> None:
        try:
            from lycoris.kohya import create_network
        except ImportError:
            from sdcloud.errors import BadRequest

            raise BadRequest(f"--network {algo} needs the 'lycoris-lora' package: pip install lycoris-lora") \
                from None
        import logging

        logging.getLogger("LyCORIS").setLevel(logging.WARNING)  # its module tables are not the user's business
        _reset_lycoris_presets()
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
        te = encoders if len(encoders) > 1 else encoders[0]
        self.network = create_network(1.0, rank, alpha, pipe.vae, te, pipe.unet, warn_on_unmatched=False,
                                      algo=algo, conv_dim=conv_rank or rank, conv_alpha=conv_alpha, dropout=dropout,
                                      # kohya LoRA's targets: the transformer blocks (lycoris' "full" preset
                                      # names diffusers' time embedding twice and refuses its own network)
                                      preset="attn-mlp")
        self.network.apply_to(te, pipe.unet, apply_text_encoder=text_encoder, apply_unet=True)
        self.network.requires_grad_(True)

    def params(self) -> dict[str, list[torch.nn.Parameter]]:
        out = {"unet": [p for m in self.network.unet_loras for p in m.parameters()]}
        te = [p for m in self.network.text_encoder_loras for p in m.parameters()]
        if te:
            out["text_encoder"] = te
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.network.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"{len(missing)} missing / {len(unexpected)} unexpected LyCORIS tensors in the state")

    def file_tensors(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        return {k: v.to("cpu", dtype).contiguous() for k, v in self.state().items()}
