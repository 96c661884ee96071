"""``sdcloud models push <file> hf://<user>/<repo>[/path]``.

The token is checked before a byte moves (none, read-only, fine-grained without write, wrong
namespace), a missing repo is created private, and files over 5 GB (SDXL merges are ~6.9 GB)
go through huggingface_hub's large-folder path, which uploads in chunks and resumes when the
same command is run again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, NotFound
from sdcloud.storage.hub_auth import check_write_token, ensure_repo, hub_error
from sdcloud.storage.model_pull import MODEL_EXTS
from sdcloud.storage.stores import parse_store_url

LARGE_FILE = 5 * 1000**3


def parse_target(target: str, file: Path) -> tuple[str, str, str]:
    """``hf://user/repo[/dir or /file.ext]`` -> (repo_id, repo_type, path_in_repo)."""
    if not target.startswith("hf://"):
        raise BadRequest(f"push target {target!r} must be hf://<user>/<repo>[/path]")
    url = parse_store_url(target)
    if url.prefix.lower().endswith(MODEL_EXTS):
        path = url.prefix
    else:
        path = "/".join(p for p in (url.prefix, file.name) if p)
    return url.location, url.repo_type, path


def _stage(file: Path, path_in_repo: str, staging_root: Path, key: str) -> Path:
    """A folder holding only ``path_in_repo`` -> ``file`` (a hard link, else a symlink), so the
    folder uploader sees one file and keeps its resume state next to it between runs."""
    folder = staging_root / ("push-" + hashlib.sha256(key.encode()).hexdigest()[:16])
    dest = folder / path_in_repo
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(dest, file):
        return folder  # staged by an earlier, interrupted run: resume it
    dest.unlink(missing_ok=True)
    try:
        os.link(file, dest)
    except OSError:
        dest.symlink_to(file.resolve())
    return folder


def push_model(file: Path, target: str, *, staging_root: Path, api: Any = None) -> str:
    """Upload ``file``; return the ``hf://`` address of the uploaded file."""
    file = Path(file)
    if not file.is_file():
        raise NotFound(f"{file} does not exist")
    if not file.name.lower().endswith(MODEL_EXTS):
        raise BadRequest(f"{file.name} is not a model file ({', '.join(MODEL_EXTS)})")
    repo_id, repo_type, path_in_repo = parse_target(target, file)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    check_write_token(api, repo_id, repo_type)
    ensure_repo(api, repo_id, repo_type)
    size = file.stat().st_size
    prefix = "datasets/" if repo_type == "dataset" else ""
    where = f"hf://{prefix}{repo_id}/{path_in_repo}"
    try:
        if size > LARGE_FILE:
            folder = _stage(file, path_in_repo, staging_root, f"{repo_type}:{repo_id}:{path_in_repo}")
            if hasattr(api, "upload_large_folder"):  # huggingface_hub 0.25 - 1.x
                api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type)
            else:  # 2.x: upload_folder is the chunked, resumable pipeline (hf_xet)
                api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                  commit_message=f"sdcloud: add {path_in_repo}")
        else:
            api.upload_file(path_or_fileobj=str(file), path_in_repo=path_in_repo, repo_id=repo_id,
                            repo_type=repo_type, commit_message=f"sdcloud: add {path_in_repo}")
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise hub_error(exc, f"upload {file.name} to {where}") from None
    return where
