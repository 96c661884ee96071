"""Scan the A1111 model folders (no torch): checkpoints, VAEs, LoRAs, embeddings.

Names are resolved only against scanned files, never joined onto user input, so a name
like ``../../etc/passwd`` cannot reach outside the model folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdcloud.errors import NotFound
from sdcloud.settings import Settings

CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt", ".bin")
VAE_EXTS = (".safetensors", ".pt", ".ckpt", ".bin")
LORA_EXTS = (".safetensors", ".pt", ".ckpt")
EMBEDDING_EXTS = (".safetensors", ".pt", ".bin")
DEMO_MODELS = ("demo", "demo-xl", "demo-inpaint")


@dataclass(frozen=True)
class ModelFile:
    """One file (or diffusers folder) in a model folder.

    ``name`` is relative to the folder (``SDXL/foo.safetensors``), ``stem`` the basename
    without extension (what A1111 prints as ``Model:``), ``model_name`` the A1111 API form.
    """

    kind: str
    name: str
    path: Path

    @property
    def stem(self) -> str:
        return Path(self.name).stem if self.path.is_file() else Path(self.name).name

    @property
    def model_name(self) -> str:
        return str(Path(self.name).with_suffix("")).replace("/", "_").replace("\\", "_") \
            if self.path.is_file() else self.name.replace("/", "_")

    @property
    def size(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _scan(kind: str, root: Path, exts: tuple[str, ...], *, diffusers_dirs: bool = False) -> list[ModelFile]:
    if not root.is_dir():
        return []
    found: list[ModelFile] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in exts:
            if any((parent / "model_index.json").exists() for parent in path.parents if root in parent.parents):
                continue  # a component file inside a diffusers folder
            found.append(ModelFile(kind, rel.as_posix(), path))
        elif diffusers_dirs and path.is_dir() and (path / "model_index.json").is_file():
            found.append(ModelFile(kind, rel.as_posix(), path))
    return found


# Named in not-found messages as A1111's layout names them, never as a path of this server.
_FOLDERS = {"checkpoint": "models/Stable-diffusion", "vae": "models/VAE", "lora": "models/Lora",
            "embedding": "embeddings"}
_LIST_ROUTES = {"checkpoint": "/sdapi/v1/sd-models", "vae": "/sdapi/v1/sd-vae", "lora": "/sdapi/v1/loras",
                "embedding": "/sdapi/v1/embeddings"}


class Catalog:
    """The model files under one ``Settings``' folders. ``refresh()`` rescans."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, list[ModelFile]] = {}

    def refresh(self) -> None:
        self._cache.clear()

    def _get(self, kind: str) -> list[ModelFile]:
        if kind not in self._cache:
            s = self.settings
            self._cache[kind] = {
                "checkpoint": lambda: _scan("checkpoint", s.checkpoints_path, CHECKPOINT_EXTS, diffusers_dirs=True),
                "vae": lambda: _scan("vae", s.vae_path, VAE_EXTS),
                "lora": lambda: _scan("lora", s.lora_path, LORA_EXTS),
                "embedding": lambda: _scan("embedding", s.embeddings_path, EMBEDDING_EXTS),
            }[kind]()
        return self._cache[kind]

    def checkpoints(self) -> list[ModelFile]:
        return self._get("checkpoint")

    def vaes(self) -> list[ModelFile]:
        return self._get("vae")

    def loras(self) -> list[ModelFile]:
        return self._get("lora")

    def embeddings(self) -> list[ModelFile]:
        return self._get("embedding")

    def resolve(self, kind: str, name: str) -> ModelFile:
        """Find by relative name, name without extension, stem, or A1111 title ``name [hash]``.

        A name not in the cached scan triggers one rescan (a file copied in since)."""
        try:
            return self._resolve(kind, name)
        except NotFound:
            self._cache.pop(kind, None)
            return self._resolve(kind, name)

    def _resolve(self, kind: str, name: str) -> ModelFile:
        wanted = name.strip()
        if wanted.endswith("]") and " [" in wanted:
            wanted = wanted[: wanted.rindex(" [")]
        items = self._get(kind)
        for match in (
            lambda m: m.name == wanted,
            lambda m: str(Path(m.name).with_suffix("")) == wanted,
            lambda m: m.model_name == wanted,
            lambda m: m.stem == wanted,
        ):
            hits = [m for m in items if match(m)]
            if hits:
                return hits[0]
        raise NotFound(
            f"{kind} '{name}' not found in {_FOLDERS[kind]}; list them with GET {_LIST_ROUTES[kind]} "
            "or 'sdcloud models list'"
        )
