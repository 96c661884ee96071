"""An S3 bucket (AWS, or any S3-compatible service: R2, B2, Wasabi, MinIO) through s3fs.

Credentials come from the usual AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles); the endpoint from ``--store-endpoint`` /
``SDCLOUD_STORE_ENDPOINT`` for services that are not AWS.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.errors import StoreError
from sdcloud.storage.base import Store, join_key
from sdcloud.storage.fileio import fsync_dir, temp_name


class S3Store(Store):
    batch_size = 32

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._fs: Any = None

    @property
    def url(self) -> str:
        where = f"s3://{join_key(self.bucket, self.prefix)}"
        if not self.endpoint:
            return where
        from sdcloud.storage.stores import redact_url

        return f"{where} (endpoint {redact_url(self.endpoint)})"

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import s3fs

            fs = s3fs.S3FileSystem(
                endpoint_url=self.endpoint,
                skip_instance_cache=True,
                use_listings_cache=False,
                config_kwargs={"connect_timeout": 5, "read_timeout": 30,
                               "retries": {"max_attempts": 2, "mode": "standard"}},
            )
            # The outbox retries with its own backoff; don't stall a check on s3fs's retry loop.
            fs.retries = 2
            self._fs = fs
        return self._fs

    def _path(self, key: str) -> str:
        return join_key(self.bucket, self.prefix, key)

    def _error(self, exc: Exception, action: str) -> StoreError:
        """One line naming the cause; never includes credentials (botocore messages don't)."""
        text = str(exc)
        name = type(exc).__name__
        # Connection problems first: their text holds the endpoint URL, whose port may contain
        # anything (even "403").
        if ("EndpointConnectionError" in name or "Could not connect" in text or "Connect" in name
                or isinstance(exc, (ConnectionError, TimeoutError))):
            return StoreError(f"cannot reach store {self.url}; check the endpoint and the network")
        if "NoCredentials" in name or "Unable to locate credentials" in text:
            return StoreError(f"no S3 credentials for {self.url}; set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if "NoSuchBucket" in text or (isinstance(exc, FileNotFoundError) and action == "check"):
            return StoreError(f"bucket '{self.bucket}' does not exist at {self.url}; create it or fix "
                              "the store URL")
        if isinstance(exc, PermissionError) or any(s in text for s in (
                "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden")):
            return StoreError(f"store {self.url} refused the credentials ({text.splitlines()[0][:160]}); "
                              "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy")
        first = text.splitlines()[0][:200] if text else ""
        return StoreError(f"store {self.url}: {action} failed: {name}: {first}")

    def check(self) -> None:
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - botocore/aiohttp raise many unrelated types
            raise self._error(exc, "check") from None

    def put(self, local: Path, key: str) -> None:
        try:
            self.fs.put_file(str(local), self._path(key))
        except FileNotFoundError as exc:
            if not Path(local).exists():
                raise
            raise self._error(exc, "upload") from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "upload") from None

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.info(self._path(key))["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "stat") from None

    def list(self, prefix: str) -> list[str]:
        root = join_key(self.bucket, self.prefix)
        try:
            found = self.fs.find(join_key(root, prefix))
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "list") from None
        return sorted(p[len(root) + 1:] if root else p for p in found)

    def get(self, key: str, local: Path, progress: Callable[[int], None] | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(local)
        try:
            with self.fs.open(self._path(key), "rb", block_size=8 << 20) as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(8 << 20):
                    fout.write(chunk)
                    if progress:
                        progress(len(chunk))
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, local)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{key} is not in store {self.url}") from None
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise self._error(exc, "download") from None
        fsync_dir(local.parent)
