"""The web UI in Japanese and English, with Gradio's own i18n (``gr.I18n``).

UI code keeps writing plain English (``label="Sampling steps"``); :func:`translate_ui` turns
every label, info, placeholder, button text, Markdown text and tab/accordion title of the
built Blocks into a translation key, and the browser picks the language. **Adding a string
is one line in** :data:`JA` (English text -> Japanese); ``tests/test_ui_i18n.py`` fails for a
UI string without its line. A component whose text is data rather than words (a model name,
a table of numbers, a live status line) says so with ``elem_classes=[DATA_CLASS]``.

Which language: the one chosen under Settings (kept in the browser), else ``sdcloud serve
--lang ja|en``, else the browser's. Gradio reads the browser's language from
``navigator.language`` when the page starts, so :class:`UiLanguageMiddleware` puts a small
script at the top of the page that answers with the chosen language.

Only text in the page is translated; messages a handler returns at run time (errors, status
lines) stay English.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.i18n import I18nData

LANGUAGES = {"ja": "日本語", "en": "English"}
STORAGE_KEY = "sdcloud-lang"  # localStorage key of the choice made under Settings
DATA_CLASS = "sd-data"

# English UI text -> Japanese, in the words of the Japanese A1111 community (txt2img,
# CFGスケール, サンプラー, ステップ数, シード, ハイレゾ補助/Hires. fix, マージ, 学習).
JA: dict[str, str] = {
    # model bar and tabs
    "Stable Diffusion checkpoint": "Stable Diffusion チェックポイント",
    "SD VAE": "SD VAE",
    "txt2img": "txt2img",
    "img2img": "img2img",
    "Inpaint": "インペイント",
    "PNG Info": "PNG内の情報",
    "Queue": "キュー",
    "Merge": "マージ",
    "Train": "学習",
    "Training": "学習",
    "Settings": "設定",
    # generation panel
    "Prompt": "プロンプト",
    "Prompt (press Ctrl+Enter or the Generate button)": "プロンプト(Ctrl+Enter か「生成」ボタンで生成)",
    "Negative prompt": "ネガティブプロンプト",
    "Generate": "生成",
    "Interrupt": "中断",
    "Add LoRA": "LoRA を追加",
    "inserts <lora:name:1> into the prompt": "プロンプトに <lora:name:1> を挿入します",
    "Sampling method": "サンプラー",
    "Schedule type": "スケジュールタイプ",
    "Sampling steps": "ステップ数",
    "Width": "幅",
    "Height": "高さ",
    "Batch count": "バッチ回数",
    "Batch size": "バッチサイズ",
    "CFG Scale": "CFGスケール",
    "Seed": "シード",
    "Random": "ランダム",
    "Reuse": "再利用",
    "Hires. fix": "ハイレゾ補助 (Hires. fix)",
    "Enable hires. fix": "ハイレゾ補助 (Hires. fix) を有効にする",
    "Upscaler": "アップスケーラー",
    "Hires steps": "ハイレゾ補助のステップ数",
    "0 = same as sampling steps": "0 = ステップ数と同じ",
    "Denoising strength": "ノイズ除去強度",
    "Upscale by": "拡大率",
    "Resize width to": "拡大後の幅",
    "Resize height to": "拡大後の高さ",
    "Preview": "プレビュー",
    "Output": "出力",
    "Generation info": "生成情報",
    "Send to img2img": "img2img に送る",
    "Send to inpaint": "インペイントに送る",
    # img2img / inpaint
    "Image for img2img": "img2img の元画像",
    "Image for inpainting: paint the area to repaint": "インペイントの元画像: 描き直す部分を塗ってください",
    "Upload a mask instead (white = repaint)": "代わりにマスクをアップロード(白 = 描き直す部分)",
    "Mask": "マスク",
    "Resize mode": "リサイズモード",
    "Inpaint settings (Inpaint tab)": "インペイントの設定(インペイントタブ)",
    "Mask blur": "マスクのぼかし",
    "Mask mode": "マスクモード",
    "Masked content": "マスクされたコンテンツ",
    "Inpaint area": "インペイント範囲",
    "Only masked padding, pixels": "マスク部分のみの余白(ピクセル)",
    # PNG Info
    "Source": "画像",
    "Parameters": "パラメーター",
    "Send to txt2img": "txt2img に送る",
    "Parsed fields": "読み取った項目",
    "Fields": "項目",
    # Queue
    "Job": "ジョブ",
    "Cancel job": "ジョブを取り消す",
    "↻ Refresh": "↻ 更新",
    # Merge
    "Primary model (A)": "モデル A(主)",
    "Secondary model (B)": "モデル B",
    "Tertiary model (C, the common base)": "モデル C(共通のベース)",
    "Method": "マージ方式",
    "Multiplier (alpha)": "倍率 (alpha)",
    "Save as": "保存形式",
    "VAE": "VAE",
    "Output name (in models/Stable-diffusion)": "出力名(models/Stable-diffusion 内)",
    "my-merge": "my-merge",
    "Block weights (optional: 26 values for SD1/SD2, 20 for SDXL)":
        "階層マージの重み(任意: SD1/SD2 は 26 個、SDXL は 20 個)",
    # Settings
    "Language / 言語": "言語 / Language",
    "The page reloads in the language you pick; the choice is kept in this browser.":
        "選んだ言語でページを読み込み直します。選択はこのブラウザーに保存されます。",
    "Apply settings": "設定を適用",
    "↻ Reload": "↻ 再読み込み",
    "Clip skip": "Clip skip",
    "File format for images": "画像のファイル形式",
    "Quality for saved jpeg and webp images": "保存する jpeg と webp の画質",
    "Show grid in results (batches)": "結果にグリッドを表示(バッチ)",
    "Show live previews of the created image": "生成中の画像をライブプレビューで表示",
    "Live preview display period (sampling steps)": "ライブプレビューの表示間隔(ステップ数)",
    "-1 = only when the image is done": "-1 = 画像の完成時のみ",
    "All options (JSON, as GET /sdapi/v1/options serves them)": "すべてのオプション(GET /sdapi/v1/options と同じ JSON)",
    "Options": "オプション",
    "Apply JSON": "JSON を適用",
    "**Input limits** (set with `SDCLOUD_MAX_*` environment variables or the config file)":
        "**入力の上限**(環境変数 `SDCLOUD_MAX_*` か設定ファイルで変更)",
    # img2img sub-tabs (issue 17 part 6)
    "Sketch": "スケッチ",
    "Image for img2img: draw on it, the drawing is kept": "img2img の元画像: 描き込んだ絵がそのまま使われます",
    "Inpaint sketch": "インペイントスケッチ",
    "Image for inpainting: draw what to repaint, in colour": "インペイントの元画像: 描き直す部分を色で描いてください",
    "Mask transparency": "マスクの透明度",
    "Inpaint upload": "インペイントアップロード",
    "Image for inpainting": "インペイントの元画像",
    "Mask (white = repaint)": "マスク(白 = 描き直す部分)",
    "Batch": "バッチ",
    "Process every image of a folder on the server with the settings below. Folders are "
    "inside the data folder (relative paths start there) or one allowed with "
    "`--allow-batch-dir`. Add inpaint masks from a mask folder: a file with the same "
    "name as each image, or one mask for all.":
        "サーバー上のフォルダ内の画像すべてを下の設定で処理します。フォルダはデータフォルダの中"
        "(相対パスはそこから)か `--allow-batch-dir` で許可したフォルダです。インペイントには"
        "マスクフォルダを指定します(各画像と同じ名前のファイル、または全画像共通のマスク 1 枚)。",
    "Input directory": "入力フォルダ",
    "Output directory": "出力フォルダ",
    "Inpaint batch mask directory (optional)": "インペイント用マスクフォルダ(任意)",
    "Brush size": "ブラシサイズ",
    "for the Sketch and Inpaint editors": "スケッチとインペイントの描画用",
    "Resize to": "サイズを指定",
    "Resize by": "倍率を指定",
    "Scale": "倍率",
    "Inpaint settings": "インペイントの設定",
}

TEXT_PROPS = ("label", "info", "placeholder")
# components whose ``value`` is text the user reads (not data they entered)
VALUE_TEXT = (gr.Button, gr.Markdown, gr.DownloadButton, gr.UploadButton)


def ui_i18n() -> gr.I18n:
    """The translations Gradio sends to the browser: Japanese, and English as written."""
    return gr.I18n(en={key: key for key in JA}, ja=dict(JA))


def _is_words(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def ui_texts(blocks: gr.Blocks) -> Iterator[tuple[Any, str, str]]:
    """(component, property, English text) for every translatable text in ``blocks``."""
    for block in blocks.blocks.values():
        if DATA_CLASS in (getattr(block, "elem_classes", None) or []):
            continue
        props = TEXT_PROPS + (("value",) if isinstance(block, VALUE_TEXT) else ())
        for prop in props:
            text = getattr(block, prop, None)
            if isinstance(text, str) and text.strip() and _is_words(text):
                yield block, prop, text


def translate_ui(blocks: gr.Blocks, translations: gr.I18n) -> list[str]:
    """Make every text with a catalog entry a translation key, in place (call it inside the
    ``with gr.Blocks()`` block, before Gradio builds the page config). Returns the texts that
    have no entry, which stay as written."""
    missing: list[str] = []
    for block, prop, text in list(ui_texts(blocks)):
        if text in JA:
            setattr(block, prop, translations(text))
        else:
            missing.append(text)
    return list(dict.fromkeys(missing))


def english(value: Any) -> Any:
    """The English text behind a label as the page config carries it (``__i18n__{...}`` or a
    ``{"__type__": "translation_metadata"}`` object); anything else unchanged. For tests and
    clients that look components up by label."""
    if isinstance(value, I18nData):
        return value.key
    if isinstance(value, str) and value.startswith("__i18n__"):
        return json.loads(value[len("__i18n__"):]).get("key", value)
    if isinstance(value, dict) and value.get("__type__") == "translation_metadata":
        return value.get("key")
    return value


def language_script(default: str | None) -> str:
    """The script that makes Gradio start in the chosen language (see the module doc)."""
    fallback = json.dumps(default or "")
    return ("<script>(function(){try{var k=" + json.dumps(STORAGE_KEY) + ";"
            "var q=new URLSearchParams(location.search).get('lang');"
            "if(q){localStorage.setItem(k,q==='auto'?'':q);}"
            "var want=localStorage.getItem(k)||" + fallback + ";"
            "if(want){Object.defineProperty(navigator,'language',{get:function(){return want;}});"
            "Object.defineProperty(navigator,'languages',{get:function(){return [want];}});"
            "document.documentElement.lang=want;}}catch(e){}})();</script>")


def language_switch() -> gr.Radio:
    """Settings' language switch: the choice is kept in the browser and the page reloads."""
    choices = [("Auto / 自動", "auto"), *((name, code) for code, name in LANGUAGES.items())]
    radio = gr.Radio(choices, value="auto", label="Language / 言語", elem_id="setting_ui_language",
                     info="The page reloads in the language you pick; the choice is kept in this browser.")
    radio.input(None, inputs=radio, js="(v) => { localStorage.setItem('" + STORAGE_KEY + "', v === 'auto' ? '' : v);"
                " const u = new URL(location.href); u.searchParams.delete('lang'); location.href = u.toString(); }")
    return radio


SHOW_CHOICE_JS = "() => localStorage.getItem('" + STORAGE_KEY + "') || 'auto'"


class UiLanguageMiddleware:
    """Puts :func:`language_script` at the top of the UI's HTML page (pure ASGI: other
    responses, and streams, pass untouched)."""

    def __init__(self, app: Any, default: str | None = None, path: str = "/") -> None:
        self.app = app
        self.script = language_script(default).encode()
        self.paths = {path, path.rstrip("/") or "/", path.rstrip("/") + "/"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        passthrough = False

        async def wrapped(message: dict[str, Any]) -> None:
            nonlocal passthrough
            if message["type"] not in ("http.response.start", "http.response.body"):
                await send(message)  # e.g. the test client's http.response.debug
                return
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                passthrough = not html or b"content-encoding" in headers
                if passthrough:
                    await send(message)
                else:
                    start.update(message)
                return
            if passthrough:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            at = body.find(b"<head>")
            if at >= 0:
                body = body[: at + 6] + self.script + body[at + 6:]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, wrapped)
