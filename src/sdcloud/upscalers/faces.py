"""Face restoration (GFPGAN, CodeFormer) from ``models/GFPGAN`` and ``models/Codeformer``.

The restorer networks load through spandrel (CodeFormer needs spandrel_extra_arches); the
faces are found and pasted back with facexlib, as A1111 does. Where either cannot be
imported (spandrel's torchvision import fails beside a CPU torch wheel) the listing still
shows what is present and a request that asks for restoration is refused with a message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, Unsupported

FOLDERS = {"GFPGAN": "GFPGAN", "CodeFormer": "Codeformer"}
EXPECTED = {"GFPGAN": "GFPGANv1.4.pth", "CodeFormer": "codeformer-v0.1.0.pth"}
_EXTS = (".pth", ".pt", ".safetensors")
_DETECTION = ("detection_Resnet50_Final.pth", "parsing_parsenet.pth")


@dataclass(frozen=True)
class Restorer:
    name: str  # "GFPGAN" or "CodeFormer"
    folder: Path
    path: Path


def _model_files(folder: Path, name: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in _EXTS
            and p.name not in _DETECTION and name.lower() in p.name.lower()]


def scan(models_root: Path) -> list[Restorer]:
    out = []
    for name, folder in FOLDERS.items():
        files = _model_files(models_root / folder, name)
        if files:
            out.append(Restorer(name, models_root / folder, files[-1]))
    return out


def why_unavailable() -> str | None:
    """What is missing for face restoration to run here (None when everything imports)."""
    from sdcloud.upscalers.loading import spandrel_error

    why = spandrel_error()
    if why is not None:
        return why
    try:
        import facexlib  # noqa: F401
    except Exception as exc:  # ImportError, or its own torchvision import failing
        return f"facexlib cannot be imported ({str(exc).splitlines()[0][:120]})"
    return None


class FaceRestorers:
    """The restorers of one engine: keep one (the engine's ``faces``) so a model and the face
    detector load once, not for every job."""

    def __init__(self, models_root: Path, device: Any = None) -> None:
        self.models_root = models_root
        self.device = device
        self._loaded: dict[str, Any] = {}
        self._helper: tuple[Path, Any] | None = None  # facexlib's detector + parser, by models folder
        self._lock = threading.Lock()

    def listing(self) -> list[dict[str, Any]]:
        """``/sdapi/v1/face-restorers``: A1111's ``name`` and ``cmd_dir`` for the ones present."""
        return [{"name": r.name, "cmd_dir": str(r.folder)} for r in scan(self.models_root)]

    def find(self, name: str) -> Restorer:
        wanted = name.lower()
        for r in scan(self.models_root):
            if r.name.lower() == wanted:
                return r
        folder = FOLDERS.get(name, FOLDERS["GFPGAN"])  # named relative to the models folder: no server path
        raise BadRequest(f"face restorer '{name}' has no model file; put {EXPECTED.get(name, EXPECTED['GFPGAN'])} "
                         f"in the models folder's {folder}/")

    def check(self, name: str) -> Restorer:
        """Refuse up front (4xx) when ``name`` cannot run here."""
        found = self.find(name)
        why = why_unavailable()
        if why is not None:
            raise Unsupported(f"face restoration ({name}) is not available on this server: {why}. "
                              "It needs torchvision matching torch (GPU images have it), spandrel and facexlib")
        return found

    def restore(self, image: Any, name: str, visibility: float = 1.0, codeformer_weight: float = 0.5) -> Any:
        """Restore every face in ``image`` and blend the result in at ``visibility``."""
        import numpy as np
        import torch
        from facexlib.utils.face_restoration_helper import FaceRestoreHelper
        from PIL import Image

        from sdcloud.upscalers.loading import load_model

        entry = self.check(name)
        device = self.device or torch.device("cpu")
        with self._lock:
            model = self._loaded.get(entry.name)
            if model is None:
                model = load_model(entry.path).to(device, torch.float32)
                if model.purpose != "FaceSR":
                    raise Unsupported(f"{entry.path.name}: a {model.arch} {model.purpose} model, not a face restorer")
                self._loaded[entry.name] = model  # GFPGAN and CodeFormer both stay loaded (extras use both)
            if self._helper is None or self._helper[0] != entry.folder:
                self._helper = (entry.folder, FaceRestoreHelper(
                    1, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50", save_ext="png",
                    use_parse=True, device=device, model_rootpath=str(entry.folder)))
            helper = self._helper[1]
            helper.clean_all()  # the last image's faces (A1111 reuses its helper the same way)
            bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
            helper.read_image(bgr)
            helper.get_face_landmarks_5(only_center_face=False, resize=640, eye_dist_threshold=5)
            helper.align_warp_face()
            for face in helper.cropped_faces:
                x = torch.from_numpy(face[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255)[None].to(device)
                x = x * 2 - 1
                with torch.no_grad():
                    kwargs = {"weight": codeformer_weight} if entry.name == "CodeFormer" else {}
                    y = model.net(x, **kwargs)
                    y = y[0] if isinstance(y, tuple) else y
                out = ((y[0].clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
                helper.add_restored_face(out)
            helper.get_inverse_affine(None)
            restored = helper.paste_faces_to_input_image()
        result = Image.fromarray(np.ascontiguousarray(restored[:, :, ::-1]))
        return Image.blend(image.convert("RGB"), result, visibility) if visibility < 1 else result
