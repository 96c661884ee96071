"""Settings precedence (file < env < flags), A1111 folder layout, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcloud.catalog import Catalog
from sdcloud.errors import BadRequest, NotFound
from sdcloud.settings import Settings


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "sdcloud.toml"
    cfg.write_text('port = 7000\nmodel = "from-file"\nstore = "/file/store"\n[limits]\nmax_steps = 40\n')
    env = {"SDCLOUD_PORT": "7100", "SDCLOUD_MODEL": "from-env", "SDCLOUD_MAX_BATCH_SIZE": "2"}
    s = Settings.load({"model": "from-flag", "store": None}, env=env, config_file=cfg)
    assert (s.port, s.model, s.store) == (7100, "from-flag", "/file/store")
    assert s.limits.max_steps == 40 and s.limits.max_batch_size == 2


def test_a1111_layout_and_overrides(tmp_path: Path) -> None:
    s = Settings.load({"data_dir": str(tmp_path), "lora_dir": str(tmp_path / "elsewhere")}, env={})
    assert s.checkpoints_path == tmp_path / "models/Stable-diffusion"
    assert s.vae_path == tmp_path / "models/VAE"
    assert s.embeddings_path == tmp_path / "embeddings"
    assert s.lora_path == tmp_path / "elsewhere"
    s.ensure_dirs()
    assert s.outputs_path.is_dir() and s.checkpoints_path.is_dir()


@pytest.mark.parametrize("values,message", [
    ({"device": "tpu"}, "device' must be one of"),
    ({"port": "http"}, "port' must be int"),
    ({"auth": "nopassword"}, "user:password"),
    ({"budget": "-5"}, "must not be negative"),
    ({"bogus": 1}, "unknown setting 'bogus'"),
])
def test_bad_settings_name_the_field(values: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        Settings.load(values, env={})


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(BadRequest, match="not valid TOML"):
        Settings.load({}, env={}, config_file=bad)
    with pytest.raises(BadRequest, match="not found"):
        Settings.load({}, env={}, config_file=tmp_path / "missing.toml")


def test_catalog_resolves_names_only_against_scanned_files(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    s.ensure_dirs()
    (s.checkpoints_path / "SDXL").mkdir()
    (s.checkpoints_path / "SDXL/juggernaut.safetensors").write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    cat = Catalog(s)
    entry = cat.resolve("checkpoint", "SDXL/juggernaut")
    assert entry.name == "SDXL/juggernaut.safetensors" and entry.model_name == "SDXL_juggernaut"
    assert cat.resolve("checkpoint", "juggernaut [0123456789]").path == entry.path
    for evil in ("../secret", "../../secret.safetensors", str(tmp_path / "secret.safetensors")):
        with pytest.raises(NotFound):
            cat.resolve("checkpoint", evil)
