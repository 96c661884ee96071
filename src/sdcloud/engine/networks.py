"""Extra networks named in prompts: kohya LoRAs (``<lora:name:w>``) and textual-inversion
embeddings (by file name), loaded into the current pipeline through diffusers/PEFT."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from sdcloud.catalog import Catalog
from sdcloud.checkpoints.hashing import HashCache
from sdcloud.engine.network_patch import WeightPatcher
from sdcloud.errors import BadRequest, CorruptFile, NotFound, UnsafeFile, Unsupported
from sdcloud.prompt_syntax import ExtraNetwork
from sdcloud.prompt_syntax.extra_networks import mentions

log = logging.getLogger(__name__)

_LYCORIS_MARKERS = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "oft_blocks": "OFT", "oft_diag": "OFT",
                    "on_input": "IA3", "a1.weight": "GLoRA", ".diff": "full-diff", "w_norm": "norm",
                    "lora_mid": "LoCon-Tucker", "dora_scale": "DoRA"}
PATCHED_KINDS = ("LoHa", "LoKr", "full-diff", "LoCon-Tucker")  # applied by weight patching (network_patch)


def lora_kind(path: Path) -> str | None:
    """Name the LyCORIS variant that diffusers cannot load, or None for a plain LoRA."""
    if path.suffix.lower() != ".safetensors":
        return None
    from sdcloud.checkpoints.safetensors_header import read_header

    keys = read_header(path).tensors
    for key in keys:
        for marker, name in _LYCORIS_MARKERS.items():
            if marker in key:
                return name
    return None


def _adapter_name(name: str) -> str:
    return "lora_" + re.sub(r"\W", "_", name)


class NetworkManager:
    """Tracks which LoRAs/embeddings are loaded into one pipeline."""

    def __init__(self, pipe: Any, catalog: Catalog, hashes: HashCache) -> None:
        self.pipe = pipe
        self.catalog = catalog
        self.hashes = hashes
        self.loaded_loras: dict[str, str] = {}  # catalog name -> adapter name
        self.active: tuple[tuple[str, float, float], ...] = ()
        self.embeddings: dict[str, Path] = {}
        self.skipped: dict[str, str] = {}  # embedding name -> why it could not be loaded
        self.comments: list[str] = []  # A1111's comments for the last apply_loras/ensure_embeddings
        self.patcher = WeightPatcher(pipe)  # LyCORIS files PEFT cannot load

    def apply_loras(self, networks: list[ExtraNetwork]) -> tuple[dict[str, str], bool]:
        """Activate exactly these LoRAs with their weights. Returns (Lora hashes, changed).

        As A1111, a LoRA that is not there or cannot be loaded does not fail the job: it is
        skipped, logged, and named in ``comments`` ("Networks not found: x")."""
        wanted: list[tuple[str, float, float]] = []
        patched: list[tuple[Path, float, float]] = []
        hashes: dict[str, str] = {}
        missing: list[str] = []
        self.comments = []
        for net in networks:
            if net.kind not in ("lora", "lyco"):
                raise BadRequest(f"<{net.kind}:...> is not supported; use <lora:name:weight>")
            try:
                entry, kind = self._load_lora(net)
            except (NotFound, Unsupported, CorruptFile, UnsafeFile) as exc:
                log.warning("skipping network: %s", exc)
                missing.append(net.name)
                continue
            if kind in PATCHED_KINDS:
                patched.append((entry.path, net.te_multiplier, net.unet_multiplier))
            else:
                wanted.append((entry.name, net.te_multiplier, net.unet_multiplier))
            hashes[entry.stem] = self.hashes.get(entry.path).lora_short
        if missing:
            self.comments.append("Networks not found: " + ", ".join(dict.fromkeys(missing)))
        changed = self.patcher.apply(patched)
        return hashes, self._activate(tuple(wanted)) or changed

    def _load_lora(self, net: ExtraNetwork) -> tuple[Any, str | None]:
        """The catalog entry and its LyCORIS kind (None: a plain LoRA, loaded as a PEFT adapter)."""
        entry = self.catalog.resolve("lora", net.name)
        kind = lora_kind(entry.path)
        if kind in PATCHED_KINDS:
            self.patcher.check(entry.path)
            return entry, kind
        if kind is not None:
            raise Unsupported(f"LoRA '{net.name}' is a LyCORIS {kind} file, which is not supported")
        if entry.name not in self.loaded_loras:
            adapter = _adapter_name(entry.name)
            try:
                self.pipe.load_lora_weights(str(entry.path), adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise Unsupported(f"LoRA '{net.name}' could not be loaded: {str(exc).splitlines()[0][:200]}") \
                    from None
            self.loaded_loras[entry.name] = adapter
        return entry, None

    def _activate(self, key: tuple[tuple[str, float, float], ...]) -> bool:
        wanted = list(key)
        if key == self.active:
            return False
        if wanted:
            names = [self.loaded_loras[n] for n, _, _ in wanted]
            weights = []
            for _, te, unet in wanted:
                w: dict[str, float] = {"unet": unet, "text_encoder": te}
                if getattr(self.pipe, "text_encoder_2", None) is not None:
                    w["text_encoder_2"] = te
                weights.append(w)
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
        elif self.loaded_loras:
            self.pipe.disable_lora()
        self.active = key
        return True

    def ensure_embeddings(self, *prompts: str) -> tuple[dict[str, str], bool]:
        """Load every embedding whose file name appears as a word in the prompts. One that
        cannot be loaded (made for another model, damaged) is skipped, as A1111 skips it: the
        word stays plain text and ``comments`` says so."""
        text = " ".join(prompts)
        used: dict[str, str] = {}
        changed = False
        skipped: list[str] = []
        for entry in self.catalog.embeddings():
            name = entry.stem
            if not mentions(text, name):
                continue
            if name in self.skipped:
                skipped.append(name)
                continue
            if name not in self.embeddings:
                try:
                    self._load_embedding(entry.path, name)
                except Unsupported as exc:
                    log.warning("skipping embedding: %s", exc)
                    self.skipped[name] = str(exc)
                    skipped.append(name)
                    continue
                self.embeddings[name] = entry.path
                changed = True
            used[name] = self.hashes.get(entry.path).sha256[:12]
        if skipped:
            self.comments.append("Textual inversion embeddings skipped: " + ", ".join(skipped))
        return used, changed

    def _load_embedding(self, path: Path, name: str) -> None:
        pipe = self.pipe
        try:
            if getattr(pipe, "text_encoder_2", None) is not None:
                from safetensors.torch import load_file

                state = load_file(str(path)) if path.suffix == ".safetensors" else None
                if not state or "clip_l" not in state or "clip_g" not in state:
                    raise Unsupported(f"embedding '{name}' is not an SDXL embedding (needs clip_l and clip_g)")
                pipe.load_textual_inversion(state["clip_l"], token=name, text_encoder=pipe.text_encoder,
                                            tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=name, text_encoder=pipe.text_encoder_2,
                                            tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(str(path), token=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise Unsupported(f"embedding '{name}' could not be loaded: {str(exc).splitlines()[0][:200]}") from None
