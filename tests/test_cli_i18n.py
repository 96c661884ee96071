"""The command line in Japanese: help, messages and progress follow --lang / SDCLOUD_LANG /
LANGUAGE / LC_ALL / LANG; an unknown language falls back to English with one line; every CLI
message has its Japanese entry; the built package carries the compiled catalog."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sdcloud.i18n import normalize, resolve_language

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, python_path: str | None = None, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SDCLOUD_") and k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="200", **env_vars)
    if python_path:
        env["PYTHONPATH"] = python_path
    return subprocess.run([sys.executable, "-m", "sdcloud", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=python_path or None)


@pytest.mark.parametrize(("env", "lang"), [
    ({"LANG": "ja_JP.UTF-8"}, "ja"),
    ({"LC_ALL": "ja_JP.UTF-8", "LANG": "en_US.UTF-8"}, "ja"),
    ({"LANGUAGE": "ja:en", "LANG": "en_US.UTF-8"}, "ja"),
    ({"LANGUAGE": "en", "LANG": "ja_JP.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({"SDCLOUD_LANG": "ja", "LANG": "en_US.UTF-8"}, "ja"),
    ({}, "en"),
])
def test_language_from_the_environment(env, lang):
    assert resolve_language(None, env) == (lang, None)


def test_explicit_language_wins_and_unknown_one_warns():
    assert resolve_language("ja", {"LANG": "en_US.UTF-8"}) == ("ja", None)
    assert resolve_language("en", {"LANG": "ja_JP.UTF-8"}) == ("en", None)
    lang, warning = resolve_language("fr", {"LANG": "ja_JP.UTF-8"})
    assert lang == "en" and "'fr' is not available" in warning and "\n" not in warning
    assert normalize("ja-JP") == normalize("JA_jp.utf8@x") == "ja"


def test_help_in_japanese_with_community_terms():
    res = _run("generate", "--help", LANG="ja_JP.UTF-8")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("使い方: sdcloud generate")
    assert "このヘルプを表示して終了" in out and "オプション:" in out
    assert "ステップ数" in out and "CFGスケール" in out and "ハイレゾ補助 / Hires. fix" in out
    assert "show this help message" not in out


def test_help_in_english_by_default():
    res = _run("--help", LANG="C.UTF-8")
    assert res.stdout.startswith("usage: sdcloud") and "show this help message and exit" in res.stdout


def test_lang_flag_after_the_command_and_argparse_errors_in_japanese():
    res = _run("plan", "--images", "10", "--provider", "azure", "--lang", "ja", LANG="en_US.UTF-8")
    assert res.returncode == 0, res.stderr
    assert "事業者 / プラン" in res.stdout and "合計" in res.stdout and "秒で計算" in res.stdout
    res = _run("plan", "--bogus", LANG="ja_JP.UTF-8")
    assert res.returncode == 2 and "エラー: 認識できない引数: --bogus" in res.stderr


def test_train_and_fleet_commands_speak_japanese(tmp_path):
    """The commands merged after issue 15 (train, worker, workers): help and the dataset check's
    report in Japanese, in the community's words (学習, 学習率, ワーカー)."""
    from training_data import make_dataset

    res = _run("train", "lora", "--help", LANG="ja_JP.UTF-8")
    assert res.returncode == 0, res.stderr
    assert "LoRA を学習します" in res.stdout and "学習率" in res.stdout and "show this help" not in res.stdout
    assert "--model MODEL" in res.stdout and "OPT_" not in res.stdout  # metavars name the value, not our dest
    res = _run("workers", "--help", LANG="ja_JP.UTF-8")
    assert "ブローカーに接続しているワーカー" in res.stdout
    res = _run("train", "check", str(make_dataset(tmp_path / "ds")), "--resolution", "64", LANG="ja_JP.UTF-8")
    assert res.returncode == 0, res.stderr
    assert "5_sks cat: 画像 4 枚 x 繰り返し 5 回、クラス 'sks cat'" in res.stdout
    assert "バケット: 64x64: 4" in res.stdout and "OK: 学習できます" in res.stderr
    res = _run("train", "check", str(tmp_path / "ds"), "--resolution", "64", LANG="C.UTF-8")
    assert "5_sks cat: 4 image(s) x 5 repeats, class 'sks cat'" in res.stdout and "ok: ready to train" in res.stderr


def test_unknown_language_falls_back_to_english_with_one_line():
    res = _run("--lang", "fr", "plan", "--images", "10", "--provider", "azure", LANG="C.UTF-8")
    assert res.returncode == 0
    assert res.stderr.strip().splitlines() == [
        "sdcloud: language 'fr' is not available (choose from en, ja); using English"]
    assert "provider / plan" in res.stdout
    res = _run("--version", SDCLOUD_LANG="klingon")
    assert res.returncode == 0 and res.stderr.count("\n") == 1 and "'klingon' is not available" in res.stderr


def _i18n_script():
    pytest.importorskip("babel", reason="Babel (a dev dependency) extracts the catalogs")
    spec = importlib.util.spec_from_file_location("sdcloud_i18n_script", ROOT / "scripts" / "i18n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cli_message_has_a_japanese_entry_and_the_mo_is_fresh():
    """Fails when someone adds a help text or a _("...") message without its Japanese entry
    (python scripts/i18n.py update; translate; python scripts/i18n.py compile)."""
    problems = _i18n_script().problems()
    assert not problems, "\n".join(problems)


def test_built_wheel_carries_the_catalogs_and_speaks_japanese(tmp_path):
    """What a fresh install gets: the compiled catalog inside the package (no Babel needed)."""
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(ROOT),
                          "-w", str(tmp_path / "whl"), "-q"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / "whl").glob("sdcloud-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sdcloud/locale/ja/LC_MESSAGES/sdcloud.mo" in names
    assert "sdcloud/locale/ja/LC_MESSAGES/sdcloud.po" in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    res = _run("plan", "--help", python_path=str(target), LANG="ja_JP.UTF-8")
    assert res.returncode == 0, res.stderr
    assert "1か月に生成する枚数" in res.stdout
