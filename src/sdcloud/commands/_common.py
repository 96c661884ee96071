"""Helpers shared by command modules (kept free of heavy imports)."""

from __future__ import annotations

import argparse
from typing import Any

from sdcloud.settings import Settings


def load_settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from config file < env < the global flags < ``overrides``."""
    values: dict[str, Any] = {"data_dir": getattr(args, "data_dir", None), "lang": getattr(args, "lang", None)}
    values.update(overrides)
    config = getattr(args, "config", None)
    from pathlib import Path

    return Settings.load(values, config_file=Path(config) if config else None)
