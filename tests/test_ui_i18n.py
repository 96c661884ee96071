"""The web UI's translations (Gradio's ``gr.I18n``): every UI string has its Japanese entry,
in the Japanese A1111 community's words; the page starts in the language chosen by Settings,
``--lang`` or the browser. The browser itself is exercised in test_ui_browser.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from sdcloud.api.app import create_app
from sdcloud.api.services import Services
from sdcloud.settings import Settings
from sdcloud.ui.app import build_ui
from sdcloud.ui.i18n import DATA_CHOICES_CLASS, JA, english, translate_ui, ui_i18n, ui_texts


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    from sdcloud.runtime import Runtime

    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("ui-i18n"), "model": "demo"}, env={})
    return Services(Runtime(settings))


def test_every_ui_string_has_a_japanese_entry(services: Services) -> None:
    """Generic: walks the whole built UI, so a tab or panel added later fails here until each of
    its texts has its line in src/sdcloud/ui/i18n.py (JA), or is marked as data (DATA_CLASS)."""
    blocks = build_ui(services)
    # labels with an entry are translation keys by now; choice names stay English (the browser
    # translates them), so both are checked against the catalog
    missing = sorted({text for _, _, text in ui_texts(blocks) if text not in JA})
    assert not missing, ("UI strings without a Japanese entry (add a line each to JA in "
                         "src/sdcloud/ui/i18n.py):\n" + "\n".join(repr(t) for t in missing))
    config = blocks.get_config_file()
    keys = {english(c["props"].get(p)) for c in config["components"] for p in ("label", "info", "placeholder")}
    assert {"Sampling steps", "CFG Scale", "Seed", "Hires. fix", "Merge", "Settings"} <= keys


def test_community_terms() -> None:
    assert JA["CFG Scale"] == "CFGスケール"
    assert JA["Sampling method"] == "サンプラー"
    assert JA["Sampling steps"] == "ステップ数"
    assert JA["Seed"] == "シード"
    assert "ハイレゾ補助" in JA["Hires. fix"] and "Hires. fix" in JA["Hires. fix"]
    assert JA["Merge"] == "マージ" and JA["Train"] == "学習"
    assert JA["txt2img"] == "txt2img"


def test_choices_are_words_unless_marked_as_names() -> None:
    """A Radio/Dropdown choice is a UI string (the browser shows its Japanese, the value sent
    stays English); a component whose choices are names (models, samplers) is marked instead."""
    import gradio as gr

    with gr.Blocks() as blocks:
        mode = gr.Radio(["Balanced", "A brand-new mode"], value="Balanced", label="Control Mode")
        model = gr.Dropdown(["my-model", "None"], label="Model", elem_classes=[DATA_CHOICES_CLASS])
        missing = translate_ui(blocks, ui_i18n())
    assert missing == ["A brand-new mode"]
    assert mode.choices == [("Balanced", "Balanced"), ("A brand-new mode", "A brand-new mode")]  # values unchanged
    assert english(model.label) == "Model" and model.choices[0] == ("my-model", "my-model")
    assert JA["X/Y/Z plot"] == "X/Y/Z プロット" and JA["None"] == "なし"


def test_new_tabs_use_the_community_words() -> None:
    """The tabs and panels from issues 13, 14, 16 and 17, in the Japanese A1111 community's words."""
    assert JA["Upscaler 1"] == "アップスケーラー 1"
    assert JA["Face restoration"] == "顔の修復"
    assert JA["Script"] == "スクリプト" and JA["Styles"] == "スタイル"
    assert JA["ControlNet"] == "ControlNet" and JA["Preprocessor"] == "プリプロセッサー"
    assert JA["### Training"] == "### 学習" and JA["Learning rate"] == "学習率"
    assert JA["### Workers"] == "### ワーカー"


def test_catalog_is_safe_for_the_browser() -> None:
    """Gradio formats translations as ICU messages: braces would be read as placeholders."""
    for key, value in JA.items():
        assert value.strip(), key
        assert not any(ch in key + value for ch in "{}"), key
    i18n = ui_i18n()
    assert set(i18n.translations_dict["en"]) == set(i18n.translations_dict["ja"]) == set(JA)


@pytest.mark.parametrize(("lang", "expected"), [("ja", '||"ja"'), (None, '||""'), ("fr", '||"en"')])
def test_page_starts_in_the_server_language(tmp_path, lang, expected) -> None:
    settings = Settings.load({"data_dir": tmp_path, "model": "demo", "lang": lang}, env={})
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 200
        head = page.text[: page.text.index("</head>")]
        assert "localStorage.getItem(k)" + expected in head
        assert int(page.headers["content-length"]) == len(page.content)
        config = client.get("/config").json()  # other answers pass untouched
        assert "ja" in config["i18n_translations"]
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]


def test_lang_from_environment_falls_back_to_english() -> None:
    assert Settings.load({}, env={"SDCLOUD_LANG": "ja_JP.UTF-8"}).lang == "ja"
    assert Settings.load({}, env={"SDCLOUD_LANG": "fr"}).lang == "en"
    assert Settings.load({}, env={}).lang is None

