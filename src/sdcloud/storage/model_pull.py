"""``sdcloud models pull``: fetch a model into the right A1111 folder.

Sources: a plain URL, ``hf://user/repo[/file]`` or ``user/repo[/file]``, a Hugging Face
``resolve``/``blob`` URL, a Civitai page or download URL, ``civitai:<version-id>``.

A download goes to ``models/.downloads/<hash>.part`` first and resumes from there with an HTTP
Range request; the SHA-256 is checked when the source publishes one (Civitai's API, the Hub's
``X-Linked-Etag``); what is not a model (Civitai's JSON/HTML error pages, wrong content type,
a few bytes) is refused with the reason. Tokens (``HF_TOKEN``/the huggingface_hub login,
``CIVITAI_TOKEN``) go only to their own host and never into messages or files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from sdcloud.errors import BadRequest, CorruptFile, NotFound, SdcloudError, StoreError
from sdcloud.storage.fileio import fsync_dir
from sdcloud.storage.model_sources import record_source

CIVITAI = "https://civitai.com"
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MIN_BYTES = 1024
KINDS = ("checkpoint", "lora", "vae", "embedding")
_CIVITAI_TYPES = {"checkpoint": "checkpoint", "lora": "lora", "locon": "lora", "dora": "lora",
                  "lycoris": "lora", "textualinversion": "embedding", "vae": "vae"}
_HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/.+)?$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass
class Download:
    """A resolved source: where to GET it and what we know beforehand."""

    url: str
    source: str
    filename: str | None = None
    sha256: str | None = None
    kind: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _civitai_endpoint() -> str:
    return os.environ.get("SDCLOUD_CIVITAI_ENDPOINT", CIVITAI).rstrip("/")


def _hf_headers() -> dict[str, str]:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise BadRequest("HF_HUB_OFFLINE is set; unset it to pull from the Hugging Face Hub")
    from huggingface_hub import get_token

    token = get_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _civitai_headers() -> dict[str, str]:
    token = os.environ.get("CIVITAI_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def resolve(spec: str, session: Any) -> Download:
    """Turn what the user typed into a ``Download`` (may ask Civitai's or the Hub's API)."""
    spec = spec.strip()
    if spec.startswith("civitai:"):
        vid = spec.split(":", 1)[1]
        if not vid.isdigit():
            raise BadRequest(f"'{spec}': expected civitai:<model-version-id> (a number)")
        return _civitai_version(int(vid), spec, session)
    if spec.startswith("hf://"):
        return _hf(spec[len("hf://"):], spec, session)
    parsed = urlparse(spec)
    if parsed.scheme in ("http", "https"):
        host = parsed.netloc.lower()
        civ = urlparse(_civitai_endpoint()).netloc.lower()
        hf = urlparse(_hf_endpoint()).netloc.lower()
        if host == hf:
            m = re.match(r"^/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)$", parsed.path)
            if m:
                return Download(f"{_hf_endpoint()}/{m[1]}/resolve/{m[2]}/{m[3]}", spec,
                                filename=Path(unquote(m[3])).name, headers=_hf_headers())
        if host in (civ, "www." + civ):
            found = _civitai_url(spec, parsed, session)
            if found is not None:
                return found
        return Download(spec, spec, filename=_name_from_url(parsed.path))
    if parsed.scheme:
        raise BadRequest(f"cannot pull '{spec}': use an http(s) URL, hf://user/repo[/file], "
                         "user/repo[/file], a Civitai URL or civitai:<version-id>")
    if _HF_REPO.match(spec):
        return _hf(spec, spec, session)
    raise BadRequest(f"cannot pull '{spec}': use an http(s) URL, hf://user/repo[/file], "
                     "user/repo[/file], a Civitai URL or civitai:<version-id>")


def _name_from_url(path: str) -> str | None:
    name = Path(unquote(path)).name
    return name if name.lower().endswith(MODEL_EXTS) else None


def _hf(rest: str, spec: str, session: Any) -> Download:
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise BadRequest(f"'{spec}': expected user/repo[/path/to/file.safetensors]")
    repo, path = "/".join(parts[:2]), "/".join(parts[2:])
    headers = _hf_headers()
    if not path:
        path = _pick_hf_file(repo, headers, session)
    return Download(f"{_hf_endpoint()}/{repo}/resolve/main/{path}", spec, filename=Path(path).name,
                    headers=headers)


def _pick_hf_file(repo: str, headers: dict[str, str], session: Any) -> str:
    r = session.get(f"{_hf_endpoint()}/api/models/{repo}", headers=headers, timeout=30)
    if r.status_code in (401, 404):
        raise NotFound(f"Hugging Face repo {repo} not found (or private: set HF_TOKEN)")
    if r.status_code != 200:
        raise StoreError(f"the Hub answered HTTP {r.status_code} for {repo}")
    files = [s.get("rfilename", "") for s in r.json().get("siblings", [])]
    top = [f for f in files if "/" not in f and f.lower().endswith((".safetensors", ".ckpt"))]
    if len(top) == 1:
        return top[0]
    if not top:
        raise BadRequest(f"{repo} has no single-file checkpoint at its top level; name the file: "
                         f"sdcloud models pull {repo}/<file>.safetensors")
    raise BadRequest(f"{repo} has several model files ({', '.join(sorted(top)[:6])}); name one: "
                     f"sdcloud models pull {repo}/{sorted(top)[0]}")


def _civitai_url(spec: str, parsed: Any, session: Any) -> Download | None:
    """A Civitai model page or download link; None for any other Civitai URL (fetched as is)."""
    m = re.match(r"^/api/download/models/(\d+)", parsed.path)
    if m:
        return _civitai_version(int(m[1]), spec, session)
    m = re.match(r"^/models/(\d+)", parsed.path)
    if not m:
        return None
    version = parse_qs(parsed.query).get("modelVersionId", [None])[0]
    if version and version.isdigit():
        return _civitai_version(int(version), spec, session)
    data = _civitai_api(f"/api/v1/models/{m[1]}", session)
    versions = data.get("modelVersions") or []
    if not versions:
        raise NotFound(f"Civitai model {m[1]} has no versions")
    return _civitai_version(int(versions[0]["id"]), spec, session)


def _civitai_api(path: str, session: Any) -> dict[str, Any]:
    r = session.get(_civitai_endpoint() + path, headers=_civitai_headers(), timeout=30)
    if r.status_code == 404:
        raise NotFound(f"Civitai has no {path.rsplit('/', 2)[-2][:-1]} {path.rsplit('/', 1)[-1]}")
    if r.status_code in (401, 403):
        raise BadRequest("Civitai refused the request; set CIVITAI_TOKEN to an API key from "
                         "civitai.com/user/account")
    if r.status_code != 200:
        raise StoreError(f"Civitai answered HTTP {r.status_code}")
    try:
        return r.json()
    except ValueError:
        raise StoreError("Civitai answered something that is not JSON") from None


def _civitai_version(vid: int, spec: str, session: Any) -> Download:
    data = _civitai_api(f"/api/v1/model-versions/{vid}", session)
    files = data.get("files") or []
    chosen = next((f for f in files if f.get("primary")), None) or next(
        (f for f in files if f.get("type") == "Model"), None) or (files[0] if files else None)
    if chosen is None:
        raise NotFound(f"Civitai model version {vid} lists no files")
    mtype = str((data.get("model") or {}).get("type", "")).lower()
    sha = (chosen.get("hashes") or {}).get("SHA256")
    url = chosen.get("downloadUrl") or f"{_civitai_endpoint()}/api/download/models/{vid}"
    return Download(url, spec, filename=Path(chosen.get("name") or f"civitai-{vid}.safetensors").name,
                    sha256=sha.lower() if sha else None, kind=_CIVITAI_TYPES.get(mtype),
                    headers=_civitai_headers())


# Downloading ---------------------------------------------------------------------------------
def kind_folder(settings: Any, kind: str) -> Path:
    return {"checkpoint": settings.checkpoints_path, "lora": settings.lora_path,
            "vae": settings.vae_path, "embedding": settings.embeddings_path}[kind]


def classify(path: Path) -> str | None:
    """checkpoint | lora | vae | embedding from a safetensors header; None if unsure."""
    from sdcloud.checkpoints.detect import UNET_IN, is_lora
    from sdcloud.checkpoints.safetensors_header import read_header

    shapes = read_header(path).shapes
    keys = set(shapes)
    if is_lora(shapes):
        return "lora"
    if UNET_IN in keys or any(k.startswith(("model.diffusion_model.", "state_dict.model.")) for k in keys):
        return "checkpoint"
    if keys & {"emb_params", "clip_l", "clip_g"} or any(k.startswith("string_to_param") for k in keys):
        return "embedding"
    if any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys) and all(
            k.startswith(("encoder.", "decoder.", "quant_conv", "post_quant_conv", "first_stage_model."))
            for k in keys):
        return "vae"
    return None


def _refuse_page(resp: Any, source: str) -> SdcloudError:
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip() or "unknown"
    body = resp.raw.read(65536, decode_content=True) if resp.raw is not None else b""
    text = body.decode("utf-8", "replace")
    detail = ""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            detail = str(data.get("error") or data.get("message") or "")[:200]
    except ValueError:
        m = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        detail = m[1].strip()[:120] if m else ""
    hint = ""
    if "civitai" in source.lower() or resp.status_code in (401, 403):
        hint = "; if it needs a login, set CIVITAI_TOKEN (or HF_TOKEN for the Hub)"
    return BadRequest(f"{_safe(source)} answered a {ctype} page, not a model"
                      f"{': ' + detail if detail else ''}{hint}")


def _safe(url: str) -> str:
    """The URL without its query string (Civitai links can carry ?token=...)."""
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}{p.path}" if p.scheme else url


def _check_model_bytes(path: Path, name: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(64)
    if size < MIN_BYTES:
        raise BadRequest(f"{name}: only {size} bytes, too small to be a model "
                         f"(starts with {head[:40]!r}); nothing was saved")
    if name.lower().endswith(".safetensors"):
        from sdcloud.checkpoints.safetensors_header import read_header

        try:
            read_header(path)
        except SdcloudError as exc:
            raise CorruptFile(f"{name} is not a valid safetensors file ({exc}); nothing was saved") from None
    elif not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise BadRequest(f"{name} is not a model file (starts with {head[:40]!r}); nothing was saved")


def pull(spec: str, settings: Any, *, kind: str | None = None, progress: bool = True,
         session: Any = None) -> Path:
    """Download ``spec`` into the models folder for its kind; return the final path."""
    import requests

    if kind is not None and kind not in KINDS:
        raise BadRequest(f"--kind must be one of {', '.join(KINDS)}")
    session = session or requests.Session()
    dl = resolve(spec, session)
    early_kind = kind or dl.kind
    if dl.filename and early_kind and (kind_folder(settings, early_kind) / dl.filename).exists():
        raise BadRequest(f"{kind_folder(settings, early_kind) / dl.filename} already exists; delete or "
                         "rename it first")
    staging = settings.models_root / ".downloads"
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / (hashlib.sha256(dl.url.encode()).hexdigest()[:20] + ".part")
    try:
        name, sha = _fetch(dl, part, session, progress)
    except requests.RequestException as exc:
        raise StoreError(f"download of {_safe(dl.url)} failed ({type(exc).__name__}); run the same "
                         "command again to resume") from None
    try:
        _check_model_bytes(part, name)
        if dl.sha256 and sha != dl.sha256:
            raise CorruptFile(f"{name}: SHA-256 {sha[:12]}... does not match the published "
                              f"{dl.sha256[:12]}...; the download was deleted, run the command again")
        final_kind = kind or dl.kind or (classify(part) if name.lower().endswith(".safetensors") else
                                         "checkpoint")
        if final_kind is None:
            raise BadRequest(f"cannot tell what kind of model {name} is; pass --kind "
                             f"{'|'.join(KINDS)}")
    except SdcloudError:
        part.unlink(missing_ok=True)
        raise
    dest_dir = kind_folder(settings, final_kind)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    if dest.exists():
        part.unlink(missing_ok=True)
        raise BadRequest(f"{dest} already exists; delete or rename it first")
    shutil.move(str(part), str(dest))
    fsync_dir(dest.parent)
    record_source(settings.state_path, final_kind, name,
                  {"source": _safe(spec) if "://" in spec else spec, "sha256": sha,
                   "size": dest.stat().st_size})
    return dest


def _fetch(dl: Download, part: Path, session: Any, progress: bool) -> tuple[str, str]:
    """GET ``dl.url`` into ``part`` (resuming it); return (file name, sha256 hex)."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = dict(dl.headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    with session.get(dl.url, headers=headers, stream=True, timeout=(15, 120)) as resp:
        if resp.status_code == 416 and have:
            part.unlink()  # what we had does not fit this file any more: start over
            return _fetch(dl, part, session, progress)
        if resp.status_code in (401, 403):
            raise _refuse_page(resp, dl.source)
        if resp.status_code == 404:
            raise NotFound(f"{_safe(dl.url)} not found (404)")
        if resp.status_code not in (200, 206):
            raise StoreError(f"{_safe(dl.url)} answered HTTP {resp.status_code}")
        ctype = resp.headers.get("Content-Type", "").lower()
        if ctype.startswith(("text/", "application/json", "application/xml")):
            raise _refuse_page(resp, dl.source)
        published = dl.sha256 or _linked_etag(resp)
        if published:
            dl.sha256 = published
        name = dl.filename or _disposition_name(resp) or _name_from_url(urlparse(resp.url).path)
        if not name:
            raise BadRequest(f"{_safe(dl.url)} does not name a model file (.safetensors/.ckpt)")
        name = Path(name).name
        if resp.status_code == 200:
            have = 0
        total = int(resp.headers.get("Content-Length", 0)) + have or None
        digest = hashlib.sha256()
        mode = "ab" if have else "wb"
        if have:
            with open(part, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                           unit_divisor=1024, desc=name, disable=not progress,
                                           file=sys.stderr) as bar:
            for chunk in resp.iter_content(64 << 10):  # small: a break loses at most this
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if total and part.stat().st_size < total:
        raise StoreError(f"download of {name} stopped at {part.stat().st_size} of {total} bytes; "
                         "run the same command again to resume")
    return name, digest.hexdigest()


def _linked_etag(resp: Any) -> str | None:
    for r in [*resp.history, resp]:
        tag = r.headers.get("X-Linked-Etag", "").strip('"').removeprefix("W/").strip('"')
        if _SHA256.match(tag):
            return tag.lower()
    return None


def _disposition_name(resp: Any) -> str | None:
    cd = resp.headers.get("Content-Disposition", "")
    m = re.search(r"filename\*=UTF-8''([^;]+)", cd) or re.search(r'filename="?([^";]+)"?', cd)
    return unquote(m[1]) if m else None
