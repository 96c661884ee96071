"""Where each pulled model came from (``state/model_sources.json``), so a fresh machine can
fetch the same files again (``sdcloud storage pull --checkpoints source``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdcloud.storage.fileio import write_text_durable

FILE_NAME = "model_sources.json"


def load_sources(state_path: Path) -> dict[str, dict[str, Any]]:
    path = state_path / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_source(state_path: Path, kind: str, name: str, info: dict[str, Any]) -> None:
    """Remember ``info`` (source spec, size, sha256; never a token) for ``kind/name``."""
    data = load_sources(state_path)
    data[f"{kind}/{name}"] = info
    write_text_durable(state_path / FILE_NAME, json.dumps(data, indent=2, sort_keys=True))
