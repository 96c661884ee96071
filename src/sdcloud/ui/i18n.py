"""The web UI in Japanese and English, with Gradio's own i18n (``gr.I18n``).

UI code keeps writing plain English (``label="Sampling steps"``); :func:`translate_ui` turns
every label, info, placeholder, button text, Markdown text and tab/accordion title of the
built Blocks into a translation key, and the browser picks the language. **Adding a string
is one line in** :data:`JA` (English text -> Japanese); ``tests/test_ui_i18n.py`` fails for a
UI string without its line. A component whose text is data rather than words (a model name,
a table of numbers, a live status line) says so with ``elem_classes=[DATA_CLASS]``.

Choices of a Dropdown, Radio or CheckboxGroup are words too (the Script dropdown's "X/Y/Z plot",
ControlNet's "Balanced"): the browser shows the Japanese of every choice name that has a
:data:`JA` line, and the value sent stays the English one. A component whose choices are names
(checkpoints, samplers, upscaler files) says so with ``elem_classes=[DATA_CHOICES_CLASS]``; its
choices that are words ("None", "Automatic") are still translated when they have a line.
Table headers (``gr.Dataframe``) are words too; Gradio does not translate them, so the page
script below shows the Japanese of every header that has a :data:`JA` line.

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
DATA_CHOICES_CLASS = "sd-data-choices"  # the choices are names, not words (see the module doc)

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
    # the queue and workers tables (HTML; translated in the page, see HEADERS_JS)
    "No jobs yet.": "ジョブはまだありません。",
    "No workers.": "ワーカーはいません。",
    "queued": "待機中",
    "running": "実行中",
    "done": "完了",
    "failed": "失敗",
    "cancelled": "取り消し済み",
    # job states and the progress bar's one-word texts (issue 17 part 8)
    "Queued": "待機中",
    "Running": "実行中",
    "Done": "完了",
    "Cancelled": "取り消し済み",
    "Interrupted": "中断しました",  # "Failed" is with the workers table's headers
    "Idle": "待機",
    # Train tab: learning-rate schedulers as words (the value sent stays the option's name)
    "Constant": "一定 (constant)",
    "Constant with warmup": "ウォームアップ付き一定 (constant_with_warmup)",
    "Linear": "線形 (linear)",
    "Cosine": "コサイン (cosine)",
    "Cosine with restarts": "リスタート付きコサイン (cosine_with_restarts)",
    "Train LoRA": "LoRA 学習",
    "LoRA bake": "LoRA 焼き込み",
    "Prune": "軽量化 (Prune)",
    "Convert": "変換",
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
    # generation panel: Skip, styles, extra networks (issue 17)
    "Skip": "スキップ",
    "Styles": "スタイル",
    "Apply": "適用",
    "Save prompts as a style": "プロンプトをスタイルとして保存",
    "Style name": "スタイル名",
    "Save style": "スタイルを保存",
    "Extra networks": "追加ネットワーク (Extra networks)",
    "Show": "表示",
    "Search": "検索",
    "name": "名前",
    "Weight on insert": "挿入時の重み",
    "Refresh": "更新",
    "Cards": "カード",
    "Metadata": "メタデータ",
    # Script dropdown: X/Y/Z plot, Prompt matrix, Prompts from file or textbox, SD upscale (issue 17)
    "Script": "スクリプト",
    "X type": "X軸の種類",
    "X values": "X軸の値",
    "Y type": "Y軸の種類",
    "Y values": "Y軸の値",
    "Z type": "Z軸の種類",
    "Z values": "Z軸の値",
    "1, 2, 3 or 1-10 (+2) or 1-10 [5]": "1, 2, 3 / 1-10 (+2) / 1-10 [5] のように指定",
    "Draw legend": "凡例を描画",
    "Include Sub Images": "個別の画像も出力",
    "Include Sub Grids": "サブグリッドも出力",
    "Keep -1 for seeds": "シードの -1 をそのまま使う",
    "Grid margins (px)": "グリッドの余白 (px)",
    "Grid margins": "グリッドの余白",
    "Split the prompt with `|`: every combination of the parts after the first is made.":
        "プロンプトを `|` で区切ると、先頭以外の部分のすべての組み合わせを生成します。",
    "Set at prompt start": "プロンプトの先頭に置く",
    "Random seeds": "シードをランダムにする",
    "Prompt type": "プロンプトの種類",
    "Joining char": "結合文字",
    "Iterate seed every line": "行ごとにシードを変える",
    "Use same random seed for all lines": "すべての行で同じランダムシードを使う",
    "Insert prompts at the": "プロンプトを挿入する位置",
    "List of prompt inputs": "プロンプトのリスト",
    'one prompt per line, or --prompt "a cat" --steps 20 --seed 5':
        '1 行に 1 つのプロンプト、または --prompt "a cat" --steps 20 --seed 5',
    "Upload prompt inputs": "プロンプトのファイルをアップロード",
    "Upscales the image, then redraws it tile by tile; the width and height set the tile size.":
        "画像を拡大してから、タイルごとに描き直します。幅と高さがタイルの大きさになります。",
    "Tile overlap": "タイルの重なり",
    "Scale Factor": "拡大率",
    # X/Y/Z axes added with the refiner and sampler parameters (issue 17)
    "Always discard next-to-last sigma": "最後から2番目のシグマを常に破棄",
    "Face restore": "顔の修復",
    "Negative Guidance minimum sigma": "ネガティブガイダンスの最小シグマ",
    "Refiner checkpoint": "Refinerのチェックポイント",
    "Refiner switch at": "Refinerへの切り替えタイミング",
    "Schedule max sigma": "スケジュールの最大シグマ",
    "Schedule min sigma": "スケジュールの最小シグマ",
    "Schedule rho": "スケジュールのrho",
    "Sigma Churn": "シグマチャーン (Sigma Churn)",
    "Sigma max": "シグマ最大値",
    "Sigma min": "シグマ最小値",
    "Sigma noise": "シグマノイズ",
    "Skip Early CFG": "初期CFGをスキップ",
    # ControlNet panel (issue 16): ControlNet's own words stay as the Japanese guides keep them
    "ControlNet": "ControlNet",
    "Enable": "有効にする",
    "Pixel Perfect": "Pixel Perfect",
    "Control image": "コントロール画像",
    "Control image (empty: the img2img image)": "コントロール画像(空なら img2img の画像を使用)",
    "Preprocessor": "プリプロセッサー",
    "Model": "モデル",
    "Control Weight": "コントロールの重み (Control Weight)",
    "Starting Control Step": "適用開始ステップ (Starting Control Step)",
    "Ending Control Step": "適用終了ステップ (Ending Control Step)",
    "Control Mode": "コントロールモード",
    "Resize Mode": "リサイズモード",
    "Interrogate DeepBooru": "DeepBooru で解析",
    # Extras tab (issue 16)
    "Extras": "その他 (Extras)",
    "Resize": "リサイズ",
    "Crop to fit": "サイズに合わせて切り抜く",
    "Upscaler 1": "アップスケーラー 1",
    "Upscaler 2": "アップスケーラー 2",
    "Upscaler 2 visibility": "アップスケーラー 2 の適用度",
    "Face restoration": "顔の修復",
    "Face restoration (no GFPGAN/CodeFormer file present)": "顔の修復(GFPGAN/CodeFormer のファイルがありません)",
    "GFPGAN visibility": "GFPGAN の適用度",
    "CodeFormer visibility": "CodeFormer の適用度",
    "CodeFormer weight (0 = max effect)": "CodeFormer の重み(0 = 効果最大)",
    "Result": "結果",
    "Info": "情報",
    # Workers panel in the Queue tab (issue 14)
    "### Workers": "### ワーカー",
    "Single-box mode: jobs run in this server. Start it with `--broker` to add GPU workers.":
        "単体モード: ジョブはこのサーバーで実行されます。"
        "GPU ワーカーを追加するには `--broker` を付けて起動してください。",
    # Train tab (issue 13)
    "### Dataset": "### データセット",
    "Dataset (in datasets/)": "データセット(datasets/ 内)",
    "Upload images + .txt captions (or a .zip)": "画像と .txt キャプションをアップロード(.zip も可)",
    "Folder (kohya repeats_concept, e.g. 10_sks cat; optional)":
        "フォルダー名(kohya 形式の 繰り返し回数_概念、例: 10_sks cat。任意)",
    "Upload": "アップロード",
    "Check dataset": "データセットを確認",
    "### Training": "### 学習",
    "Base model": "ベースモデル",
    "LoRA name": "LoRA の名前",
    "mychar": "mychar",
    "Memory preset (per family and VRAM)": "メモリープリセット(モデルの系統と VRAM 別)",
    "Steps": "ステップ数",
    "Rank (dim)": "ランク (dim)",
    "Alpha": "Alpha",
    "Learning rate": "学習率",
    "Resolution": "解像度",
    "Batch": "バッチ",
    "Optimizer": "オプティマイザー",
    "LR scheduler": "学習率スケジューラー",
    "Train text encoder": "テキストエンコーダーも学習する",
    "Sample every N steps": "N ステップごとにサンプルを生成",
    "Sample prompt": "サンプル用のプロンプト",
    "Resume from the saved state": "保存した状態から再開",
    "Start over (drop an unfinished run's state)": "最初からやり直す(途中の学習の状態を破棄)",
    "Stop (state is saved)": "停止(状態は保存されます)",
    "Loss": "損失 (loss)",
    "Samples": "サンプル",
    # table headers: the Queue tab's jobs and workers (the page script translates them)
    "Kind": "種類",
    "State": "状態",
    "Progress": "進捗",
    "Position": "順番",
    "Created": "作成日時",
    "Error": "エラー",
    "Worker": "ワーカー",
    "GPU": "GPU",
    "VRAM": "VRAM",
    "Holds": "読み込み済みのモデル",
    "Jobs done": "完了したジョブ",
    "Failed": "失敗",
    "Images/hour": "画像/時",
    "Cost/hour": "料金/時",
    # choices (Dropdown/Radio/CheckboxGroup): the browser shows these in place of the English name
    "None": "なし",
    "none": "なし",
    "Nothing": "なし",
    "Automatic": "自動",
    "Checkpoints": "チェックポイント",
    "LoRA": "LoRA",
    "Textual Inversion": "Textual Inversion",
    "Prompt matrix": "プロンプトマトリックス (Prompt matrix)",
    "Prompts from file or textbox": "ファイルかテキストボックスからプロンプトを読み込む",
    "X/Y/Z plot": "X/Y/Z プロット",
    "SD upscale": "SD アップスケール",
    "Var. seed": "バリエーションシード",
    "Var. strength": "バリエーションの強度",
    "Prompt S/R": "プロンプト S/R(置換)",
    "Prompt order": "プロンプトの順序",
    "Sampler": "サンプラー",
    "Hires sampler": "ハイレゾ補助のサンプラー",
    "Checkpoint name": "チェックポイント名",
    "Eta": "Eta",
    "Denoising": "ノイズ除去強度",
    "Initial noise multiplier": "初期ノイズの乗数",
    "Hires upscaler": "ハイレゾ補助のアップスケーラー",
    "RNG source": "乱数の生成元 (RNG)",
    "Size": "サイズ",
    "positive": "ポジティブ",
    "negative": "ネガティブ",
    "comma": "カンマ",
    "space": "スペース",
    "start": "先頭",
    "end": "末尾",
    "Balanced": "バランス (Balanced)",
    "My prompt is more important": "プロンプトを重視 (My prompt is more important)",
    "ControlNet is more important": "ControlNet を重視 (ControlNet is more important)",
    "Just Resize": "リサイズのみ",
    "Crop and Resize": "切り抜いてリサイズ",
    "Resize and Fill": "リサイズして余白を埋める",
    "Just resize": "リサイズのみ",
    "Crop and resize": "切り抜いてリサイズ",
    "Resize and fill": "リサイズして余白を埋める",
    "Just resize (latent upscale)": "リサイズのみ(潜在空間でアップスケール)",
    "Inpaint masked": "マスクした部分をインペイント",
    "Inpaint not masked": "マスクしていない部分をインペイント",
    "fill": "塗りつぶし",
    "original": "元の画像",
    "latent noise": "潜在空間のノイズ",
    "latent nothing": "潜在空間をゼロに",
    "Whole picture": "画像全体",
    "Only masked": "マスク部分のみ",
    "Scale by": "倍率で指定",
    "Scale to": "サイズで指定",
    "Weighted sum": "加重和 (Weighted sum)",
    "Add difference": "差分を加算 (Add difference)",
    "Train difference": "学習差分 (Train difference)",
    "TIES": "TIES",
    "DARE": "DARE",
    "Bake in A's VAE": "A の VAE を焼き込む",
    "Merge the VAEs": "VAE もマージする",
    "No VAE": "VAE なし",
    "Keep as is": "そのまま",
    "sd15-16gb: SD1.5 on a T4 16 GB: batch 2, text encoder too":
        "sd15-16gb: SD1.5、T4 16 GB 向け: バッチ 2、テキストエンコーダーも学習",
    "sd15-8gb: SD1.5 on 8 GB: fp16, gradient checkpointing, AdamW8bit":
        "sd15-8gb: SD1.5、8 GB 向け: fp16、gradient checkpointing、AdamW8bit",
    "sd15-6gb: SD1.5 on 6 GB: UNet only, fp16, checkpointing, AdamW8bit, batch 1":
        "sd15-6gb: SD1.5、6 GB 向け: UNet のみ、fp16、gradient checkpointing、AdamW8bit、バッチ 1",
    "sdxl-t4: SDXL on a Colab T4 16 GB: UNet only, fp16 (T4 has no bf16), checkpointing, AdamW8bit, dim 8":
        "sdxl-t4: SDXL、Colab の T4 16 GB 向け: UNet のみ、fp16(T4 は bf16 非対応)、gradient checkpointing、"
        "AdamW8bit、dim 8",
    "sdxl-8gb: SDXL on 8 GB (kohya: 10 GB recommended): UNet only, dim 4, batch 1":
        "sdxl-8gb: SDXL、8 GB 向け(kohya の推奨は 10 GB): UNet のみ、dim 4、バッチ 1",
    # ControlNet panel (issue 16)
    "Preprocessor Resolution": "プリプロセッサの解像度",
    "Threshold A": "しきい値 A",
    "Threshold B": "しきい値 B",
    "Interrogate CLIP": "CLIPで分析",
    # hires pass and refiner (issue 17)
    "Hires checkpoint": "ハイレゾ補助のモデル",
    "Hires sampling method": "ハイレゾ補助のサンプラー",
    "Hires schedule type": "ハイレゾ補助のスケジュールタイプ",
    "Hires prompt": "ハイレゾ補助のプロンプト",
    "Hires negative prompt": "ハイレゾ補助のネガティブプロンプト",
    "Prompt for hires fix pass.\nLeave empty to use the same prompt as in first pass.":
        "ハイレゾ補助で使うプロンプト。\n空欄なら1回目と同じプロンプトを使います。",
    "Negative prompt for hires fix pass.\nLeave empty to use the same negative prompt as in first pass.":
        "ハイレゾ補助で使うネガティブプロンプト。\n空欄なら1回目と同じネガティブプロンプトを使います。",
    "Refiner": "リファイナー",
    "Checkpoint": "モデル",
    "sampling goes on with this model (e.g. the SDXL refiner)":
        "途中からこのモデルで生成を続けます(SDXL の refiner など)",
    "Switch at": "切り替えタイミング",
    "fraction of the sampling done before the switch": "切り替えるまでに済ませる生成の割合",
    # History tab, Save / Zip under the galleries (issue 17)
    "History": "履歴",
    "Folder": "フォルダー",
    "Day": "日付",
    "Saved": "保存済み",
    "txt2img grids": "txt2img のグリッド",
    "img2img grids": "img2img のグリッド",
    "words from the prompt or parameters": "プロンプトやパラメーターの語句",
    "◀ Previous page": "◀ 前のページ",
    "Next page ▶": "次のページ ▶",
    "Images": "画像",
    "Send to extras": "Extras に送る",
    "Save": "保存",
    "Zip": "Zip",
    # img2img sub-tabs (issue 17 part 6)
    "Sketch": "スケッチ",
    "Image for img2img: draw on it, the drawing is kept": "img2img の元画像: 描き込んだ絵がそのまま使われます",
    "Inpaint sketch": "インペイントスケッチ",
    "Image for inpainting: draw what to repaint, in colour": "インペイントの元画像: 描き直す部分を色で描いてください",
    "Mask transparency": "マスクの透明度",
    "Inpaint upload": "インペイントアップロード",
    "Image for inpainting": "インペイントの元画像",
    "Mask (white = repaint)": "マスク(白 = 描き直す部分)",
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

TEXT_PROPS = ("label", "info", "placeholder", "title")
# components whose ``value`` is text the user reads (not data they entered)
VALUE_TEXT = (gr.Button, gr.Markdown, gr.DownloadButton, gr.UploadButton)
CHOICE_TEXT = (gr.Dropdown, gr.Radio, gr.CheckboxGroup)


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
        if isinstance(block, CHOICE_TEXT) and DATA_CHOICES_CLASS not in (block.elem_classes or []):
            for name, _value in block.choices or []:
                if isinstance(name, str) and name.strip() and _is_words(name):
                    yield block, "choices", name
        if isinstance(block, gr.Dataframe):
            for header in block.headers or []:
                if isinstance(header, str) and header.strip() and _is_words(header):
                    yield block, "headers", header


def translate_ui(blocks: gr.Blocks, translations: gr.I18n) -> list[str]:
    """Make every text with a catalog entry a translation key, in place (call it inside the
    ``with gr.Blocks()`` block, before Gradio builds the page config). Returns the texts that
    have no entry, which stay as written."""
    missing: list[str] = []
    for block, prop, text in list(ui_texts(blocks)):
        if text not in JA:
            missing.append(text)
        elif prop not in ("choices", "headers"):  # translated in the browser (see the module doc)
            setattr(block, prop, translations(text))
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
            "document.documentElement.lang=want;}"
            + HEADERS_JS + "}catch(e){}})();</script>")


# Gradio translates labels and choices but not a table's headers, nor text inside a gr.HTML: in a
# Japanese page, show the Japanese of each header with a JA line (Gradio's own catalog, from the
# page config): Dataframe headers, and in our HTML tables (.sd-table, the queue and workers) the
# headers, the per-cell labels of the phone layout, the empty-table line and cells that are words
# (a job's state), and a progress bar's text when it is one word with a line ("Done", "Queued");
# again whenever a table or bar is drawn anew.
HEADERS_JS = ("if((navigator.language||'').toLowerCase().indexOf('ja')===0){var busy=false;"
              "var fix=function(){busy=false;var c=window.gradio_config,"
              "t=c&&c.i18n_translations&&c.i18n_translations.ja;if(!t)return;"
              "var tr=function(n){if(n&&n.nodeType===3){var k=n.data.trim();"
              "if(t[k]&&t[k]!==k){n.data=t[k];return t[k];}}return null;};"
              "document.querySelectorAll('th .header').forEach(function(s){var v=tr(s.firstChild);"
              "var th=s.closest('th');if(v&&th)th.title=v;});"
              "document.querySelectorAll('.sd-table th, .sd-table td, .sd-progress-text').forEach(function(e){"
              "if(e.childNodes.length===1)tr(e.firstChild);var l=e.getAttribute('data-label');"
              "if(l&&t[l]&&t[l]!==l)e.setAttribute('data-label',t[l]);});};"
              "new MutationObserver(function(){if(!busy){busy=true;requestAnimationFrame(fix);}})"
              ".observe(document.documentElement,{childList:true,subtree:true,characterData:true});}")


def language_switch() -> gr.Radio:
    """Settings' language switch: the choice is kept in the browser and the page reloads."""
    choices = [("Auto / 自動", "auto"), *((name, code) for code, name in LANGUAGES.items())]
    radio = gr.Radio(choices, value="auto", label="Language / 言語", elem_id="setting_ui_language",
                     elem_classes=[DATA_CHOICES_CLASS],
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
