"""A Hugging Face Hub repo as a store (private by default).

Outputs go up in batches, one commit per batch (the Hub recommends under 100 files a commit),
and A1111's numbered images are sharded into sub-folders of 5,000 so no folder nears the
Hub's hard limit of 10,000 files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sdcloud.errors import StoreError
from sdcloud.storage.base import Store, join_key
from sdcloud.storage.fileio import copy_durable
from sdcloud.storage.hub_auth import check_write_token, ensure_repo, hub_error

SHARD_SIZE = 5000
_NUMBERED = re.compile(r"^(\d+)-")


def shard_key(key: str) -> str:
    """``outputs/txt2img-images/2026-11-27/12345-7.png`` -> ``.../2026-11-27/002/12345-7.png``."""
    if not key.startswith("outputs/"):
        return key
    folder, _, name = key.rpartition("/")
    m = _NUMBERED.match(name)
    if not m:
        return key
    return join_key(folder, f"{int(m.group(1)) // SHARD_SIZE:03d}", name)


class HubStore(Store):
    batch_size = 64

    def __init__(self, repo_id: str, repo_type: str = "model", prefix: str = "",
                 endpoint: str | None = None, token: str | None = None) -> None:
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._token = token
        self._api: Any = None

    @property
    def url(self) -> str:
        kind = "datasets/" if self.repo_type == "dataset" else ""
        return f"hf://{kind}{join_key(self.repo_id, self.prefix)}"

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self._token)
        return self._api

    def _path(self, key: str) -> str:
        return join_key(self.prefix, shard_key(key))

    def check(self) -> None:
        check_write_token(self.api, self.repo_id, self.repo_type)
        ensure_repo(self.api, self.repo_id, self.repo_type)

    def put(self, local: Path, key: str) -> None:
        self.put_many([(local, key)])

    def put_many(self, items: Iterable[tuple[Path, str]]) -> None:
        from huggingface_hub import CommitOperationAdd

        ops = [CommitOperationAdd(path_in_repo=self._path(key), path_or_fileobj=str(local))
               for local, key in items]
        if not ops:
            return
        try:
            self.api.create_commit(self.repo_id, operations=ops, repo_type=self.repo_type,
                                   commit_message=f"sdcloud: add {len(ops)} file(s)")
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, f"upload to {self.url}") from None

    def size(self, key: str) -> int | None:
        try:
            infos = self.api.get_paths_info(self.repo_id, [self._path(key)], repo_type=self.repo_type)
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, f"read {self.url}") from None
        return int(infos[0].size) if infos and getattr(infos[0], "size", None) is not None else None

    def list(self, prefix: str) -> list[str]:
        root = self.prefix
        want = join_key(root, prefix)
        try:
            files = self.api.list_repo_files(self.repo_id, repo_type=self.repo_type)
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, f"list {self.url}") from None
        out = [f[len(root) + 1:] if root else f for f in files
               if f == want or f.startswith(want + "/") or not want]
        return sorted(out)

    def get(self, key: str, local: Path, progress: Callable[[int], None] | None = None) -> None:
        tmpdir = Path(tempfile.mkdtemp(prefix=".sdcloud-hf-", dir=local.parent if local.parent.exists()
                                       else None))
        try:
            fetched = self.api.hf_hub_download(self.repo_id, self._path(key), repo_type=self.repo_type,
                                               local_dir=str(tmpdir))
            copy_durable(Path(fetched), local)
            if progress:
                progress(os.path.getsize(local))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, f"download {key} from {self.url}") from None
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
