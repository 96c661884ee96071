"""Tensor names and shapes of single-file (LDM layout) SD 1.x and SDXL checkpoints.

Generated from the architecture rather than stored, so widths can be scaled down: with the
default arguments the lists match the real files key for key and shape for shape (SD 1.5:
1,066 M parameters; SDXL base: 3,470 M including both text encoders and the VAE). ``inspect``
uses them to report missing components; the tests and ``bench/merge_memory.py`` build
synthetic checkpoints from them.
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]
UNET = "model.diffusion_model."
VAE = "first_stage_model."


@dataclass(frozen=True)
class Widths:
    """Sizes that define a layout; the defaults are SD 1.5's."""

    ch: int = 320
    mult: tuple[int, ...] = (1, 2, 4, 4)
    attn_levels: tuple[int, ...] = (0, 1, 2)  # levels with transformers
    depth: tuple[int, ...] = (1, 1, 1, 1)  # transformer blocks per level
    mid_depth: int = 1
    ctx: int = 768
    in_channels: int = 4
    linear_proj: bool = False  # proj_in/out Linear (SD2, SDXL) or 1x1 conv (SD1)
    adm: int = 0  # SDXL label embedding input width
    text_width: int = 768
    text_layers: int = 12
    big_text_width: int = 0  # SDXL OpenCLIP bigG
    big_text_layers: int = 0
    vocab: int = 49408
    vae_ch: int = 128


SD15 = Widths()
SDXL = Widths(mult=(1, 2, 4), attn_levels=(1, 2), depth=(0, 2, 10), mid_depth=10, ctx=2048,
              linear_proj=True, adm=2816, big_text_width=1280, big_text_layers=32)


def _norm(p: str, c: int) -> dict[str, Shape]:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,)}


def _lin(p: str, o: int, i: int, bias: bool = True) -> dict[str, Shape]:
    return {f"{p}.weight": (o, i), **({f"{p}.bias": (o,)} if bias else {})}


def _conv(p: str, o: int, i: int, k: int = 3) -> dict[str, Shape]:
    return {f"{p}.weight": (o, i, k, k), f"{p}.bias": (o,)}


def _resblock(p: str, i: int, o: int, emb: int) -> dict[str, Shape]:
    out = {**_norm(f"{p}.in_layers.0", i), **_conv(f"{p}.in_layers.2", o, i),
           **_lin(f"{p}.emb_layers.1", o, emb), **_norm(f"{p}.out_layers.0", o),
           **_conv(f"{p}.out_layers.3", o, o)}
    if i != o:
        out.update(_conv(f"{p}.skip_connection", o, i, 1))
    return out


def _transformer(p: str, c: int, depth: int, w: Widths) -> dict[str, Shape]:
    proj = (lambda q: _lin(q, c, c)) if w.linear_proj else (lambda q: _conv(q, c, c, 1))
    out = {**_norm(f"{p}.norm", c), **proj(f"{p}.proj_in")}
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for attn, kv in (("attn1", c), ("attn2", w.ctx)):
            out.update(_lin(f"{b}.{attn}.to_q", c, c, False))
            out.update(_lin(f"{b}.{attn}.to_k", c, kv, False))
            out.update(_lin(f"{b}.{attn}.to_v", c, kv, False))
            out.update(_lin(f"{b}.{attn}.to_out.0", c, c))
        out.update({**_lin(f"{b}.ff.net.0.proj", 8 * c, c), **_lin(f"{b}.ff.net.2", c, 4 * c)})
        for n in (1, 2, 3):
            out.update(_norm(f"{b}.norm{n}", c))
    out.update(proj(f"{p}.proj_out"))
    return out


def unet(w: Widths) -> dict[str, Shape]:
    emb = 4 * w.ch
    out = {**_lin("time_embed.0", emb, w.ch), **_lin("time_embed.2", emb, emb)}
    if w.adm:
        out.update({**_lin("label_emb.0.0", emb, w.adm), **_lin("label_emb.0.2", emb, emb)})
    out.update(_conv("input_blocks.0.0", w.ch, w.in_channels))
    skips, c, k = [w.ch], w.ch, 1
    for level, m in enumerate(w.mult):
        for _ in range(2):
            out.update(_resblock(f"input_blocks.{k}.0", c, m * w.ch, emb))
            c = m * w.ch
            if level in w.attn_levels:
                out.update(_transformer(f"input_blocks.{k}.1", c, w.depth[level], w))
            skips.append(c)
            k += 1
        if level != len(w.mult) - 1:
            out.update(_conv(f"input_blocks.{k}.0.op", c, c))
            skips.append(c)
            k += 1
    out.update({**_resblock("middle_block.0", c, c, emb), **_transformer("middle_block.1", c, w.mid_depth, w),
                **_resblock("middle_block.2", c, c, emb)})
    k = 0
    for level in reversed(range(len(w.mult))):
        for i in range(3):
            o = w.mult[level] * w.ch
            out.update(_resblock(f"output_blocks.{k}.0", c + skips.pop(), o, emb))
            c, sub = o, 1
            if level in w.attn_levels:
                out.update(_transformer(f"output_blocks.{k}.1", c, w.depth[level], w))
                sub = 2
            if level and i == 2:
                out.update(_conv(f"output_blocks.{k}.{sub}.conv", c, c))
            k += 1
    out.update({**_norm("out.0", w.ch), **_conv("out.2", 4, w.ch)})
    return {UNET + k: v for k, v in out.items()}


def clip_l(prefix: str, w: Widths) -> dict[str, Shape]:
    """HF CLIP text model (SD 1.x ``cond_stage_model.transformer.``, SDXL embedder 0)."""
    d, p = w.text_width, prefix + "text_model."
    out: dict[str, Shape] = {f"{p}embeddings.token_embedding.weight": (w.vocab, d),
                             f"{p}embeddings.position_embedding.weight": (77, d),
                             f"{p}embeddings.position_ids": (1, 77)}
    for n in range(w.text_layers):
        lp = f"{p}encoder.layers.{n}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out.update(_lin(f"{lp}self_attn.{proj}", d, d))
        out.update({**_norm(f"{lp}layer_norm1", d), **_lin(f"{lp}mlp.fc1", 4 * d, d),
                    **_lin(f"{lp}mlp.fc2", d, 4 * d), **_norm(f"{lp}layer_norm2", d)})
    out.update(_norm(f"{p}final_layer_norm", d))
    return out


def open_clip(prefix: str, width: int, layers: int, vocab: int) -> dict[str, Shape]:
    """OpenCLIP text tower (SD 2.x ``cond_stage_model.model.``, SDXL embedder 1)."""
    out: dict[str, Shape] = {f"{prefix}positional_embedding": (77, width),
                             f"{prefix}text_projection": (width, width),
                             f"{prefix}token_embedding.weight": (vocab, width), f"{prefix}logit_scale": ()}
    for n in range(layers):
        p = f"{prefix}transformer.resblocks.{n}."
        out.update({f"{p}attn.in_proj_weight": (3 * width, width), f"{p}attn.in_proj_bias": (3 * width,),
                    **_lin(f"{p}attn.out_proj", width, width), **_norm(f"{p}ln_1", width),
                    **_norm(f"{p}ln_2", width), **_lin(f"{p}mlp.c_fc", 4 * width, width),
                    **_lin(f"{p}mlp.c_proj", width, 4 * width)})
    out.update(_norm(f"{prefix}ln_final", width))
    return out


def vae(w: Widths) -> dict[str, Shape]:
    mult = (1, 2, 4, 4)
    ch = [w.vae_ch * m for m in mult]
    top = ch[-1]

    def block(p: str, i: int, o: int) -> dict[str, Shape]:
        out = {**_norm(f"{p}.norm1", i), **_conv(f"{p}.conv1", o, i), **_norm(f"{p}.norm2", o),
               **_conv(f"{p}.conv2", o, o)}
        if i != o:
            out.update(_conv(f"{p}.nin_shortcut", o, i, 1))
        return out

    def mid(p: str) -> dict[str, Shape]:
        out = {**block(f"{p}.mid.block_1", top, top), **_norm(f"{p}.mid.attn_1.norm", top)}
        for n in ("q", "k", "v", "proj_out"):
            out.update(_conv(f"{p}.mid.attn_1.{n}", top, top, 1))
        return {**out, **block(f"{p}.mid.block_2", top, top)}

    out = _conv("encoder.conv_in", w.vae_ch, 3)
    c = w.vae_ch
    for i, o in enumerate(ch):
        for j in range(2):
            out.update(block(f"encoder.down.{i}.block.{j}", c, o))
            c = o
        if i != len(ch) - 1:
            out.update(_conv(f"encoder.down.{i}.downsample.conv", c, c))
    out.update({**mid("encoder"), **_norm("encoder.norm_out", top), **_conv("encoder.conv_out", 8, top),
                **_conv("quant_conv", 8, 8, 1), **_conv("post_quant_conv", 4, 4, 1),
                **_conv("decoder.conv_in", top, 4), **mid("decoder")})
    c = top
    for i in reversed(range(len(ch))):
        for j in range(3):
            out.update(block(f"decoder.up.{i}.block.{j}", c, ch[i]))
            c = ch[i]
        if i:
            out.update(_conv(f"decoder.up.{i}.upsample.conv", c, c))
    out.update({**_norm("decoder.norm_out", w.vae_ch), **_conv("decoder.conv_out", 3, w.vae_ch)})
    return {VAE + k: v for k, v in out.items()}


def checkpoint(w: Widths = SD15) -> dict[str, Shape]:
    """Every tensor of a pruned single-file checkpoint: UNet, text encoder(s), VAE."""
    out = unet(w)
    if w.big_text_width:
        out.update(clip_l("conditioner.embedders.0.transformer.", w))
        out.update(open_clip("conditioner.embedders.1.model.", w.big_text_width, w.big_text_layers, w.vocab))
    else:
        out.update(clip_l("cond_stage_model.transformer.", w))
    out.update(vae(w))
    return out


def ema_name(key: str) -> str:
    """LDM ``LitEma`` buffer name of a UNet parameter (``model.`` dropped, dots removed)."""
    return "model_ema." + key[len("model."):].replace(".", "")
