"""The UI's image, progress-bar, queue-table and settings helpers."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from PIL import Image, ImageDraw

from sdcloud.errors import BadRequest
from sdcloud.image_files import decode_base64 as from_base64
from sdcloud.image_files import encode_image as to_base64_png
from sdcloud.ui.inpaint_mask import inpaint_inputs, mask_from_layers
from sdcloud.ui.progress import bar_text, progress_html
from sdcloud.ui.queue_tab import queue_rows
from sdcloud.ui.settings_tab import changed_options, typed_changes


def _stroke_layer(size: tuple[int, int], box: tuple[int, int, int, int], colour: str) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(box, fill=colour)
    return layer


def test_mask_is_the_union_of_painted_strokes_whatever_their_colour() -> None:
    size = (64, 48)
    layers = [_stroke_layer(size, (0, 0, 9, 9), "white"), _stroke_layer(size, (40, 30, 49, 39), "red")]
    mask = mask_from_layers(layers, size)
    assert mask is not None and mask.mode == "L" and mask.size == size
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((45, 35)) == 255
    assert mask.getpixel((20, 20)) == 0
    assert mask_from_layers([Image.new("RGBA", size, (0, 0, 0, 0))], size) is None


def test_inpaint_inputs_combine_editor_strokes_and_uploaded_mask() -> None:
    background = Image.new("RGBA", (32, 32), (10, 200, 10, 255))
    editor = {"background": background, "layers": [_stroke_layer((32, 32), (0, 0, 7, 7), "white")],
              "composite": background}
    uploaded = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(uploaded).rectangle((48, 48, 63, 63), fill=255)  # bottom-right, at twice the size
    image, mask = inpaint_inputs(editor, uploaded)
    assert image is not None and image.mode == "RGB" and image.size == (32, 32)
    assert mask is not None and mask.size == (32, 32)
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((30, 30)) == 255 and mask.getpixel((16, 16)) == 0
    assert inpaint_inputs(None, uploaded) == (None, None)
    assert inpaint_inputs({**editor, "layers": []}, None)[1] is None  # nothing painted, nothing uploaded


def test_base64_round_trip_keeps_pixels() -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    data = to_base64_png(image)
    assert from_base64(data).getpixel((0, 0)) == (1, 2, 3)
    assert from_base64("data:image/png;base64," + data).size == (8, 8)


def _job(**kw: object) -> SimpleNamespace:
    base = {"id": "j", "kind": "txt2img", "state": "queued", "progress": 0.0, "step": 0, "steps": 0,
            "eta_seconds": None, "position": None, "created": 0.0, "finished": None, "error": None}
    return SimpleNamespace(**{**base, **kw})


def test_progress_bar_says_what_the_job_is_doing() -> None:
    assert "Queued (#2 in line)" in progress_html(_job(position=2))
    running = progress_html(_job(state="running", progress=0.35, step=7, steps=20, eta_seconds=75))
    assert "Step 7/20 · 35% · ETA 1:15" in running and 'aria-valuenow="35"' in running
    assert "width:35.0%" in running
    assert 'aria-valuenow="100"' in progress_html(_job(state="done", progress=0.9))
    assert "Interrupted" in progress_html(_job(state="done", interrupted=True))
    failed = progress_html(_job(state="failed", error="out of GPU memory <b>"))
    assert "Failed: out of GPU memory &lt;b&gt;" in failed  # escaped
    assert progress_html(None) == ""


def test_queue_rows_list_running_then_queued_then_recent_finished() -> None:
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    jobs = [
        _job(id="old", state="done", progress=1.0, created=t0, finished=t0),
        _job(id="q2", position=2, created=t0),
        _job(id="run", state="running", progress=0.5, step=2, steps=4, position=0, created=t0),
        _job(id="q1", position=1, created=t0),
        _job(id="bad", state="failed", error="boom", created=t0, finished=t0 + dt.timedelta(seconds=5)),
    ]
    rows = queue_rows(jobs)
    assert [r[0] for r in rows] == ["run", "q1", "q2", "bad", "old"]
    assert rows[0][2] == "Running"  # a word, not the queue's internal state name
    assert bar_text(rows[0][3]) == "Step 2/4 · 50%" and 'aria-valuenow="50"' in rows[0][3]  # Generate's bar
    assert rows[3][6] == "boom" and rows[3][5] == "12:00:00"


def test_changed_options_returns_only_edits_and_refuses_bad_json() -> None:
    current = {"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1}
    assert changed_options(current, '{"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 2}') == {
        "CLIP_stop_at_last_layers": 2}
    with pytest.raises(BadRequest, match="not valid JSON"):
        changed_options(current, '{"sd_vae": ')
    with pytest.raises(BadRequest, match="JSON object"):
        changed_options(current, "[1, 2]")


def test_typed_changes_casts_slider_floats_and_keeps_only_edits() -> None:
    current = {"CLIP_stop_at_last_layers": 1, "live_previews_enable": True, "samples_format": "png"}
    edited = {"CLIP_stop_at_last_layers": 2.0, "live_previews_enable": True, "samples_format": "png"}
    changes = typed_changes(current, edited)
    assert changes == {"CLIP_stop_at_last_layers": 2} and type(changes["CLIP_stop_at_last_layers"]) is int
    assert typed_changes(current, {"live_previews_enable": 0}) == {"live_previews_enable": False}


def test_queue_table_html_escapes_and_labels_every_cell_for_phones() -> None:
    from sdcloud.ui.queue_tab import HEADERS, table_html

    t0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    rows = queue_rows([_job(id="m1", kind="ckpt-merge", state="failed", error="<b>bad</b>", created=t0,
                            finished=t0)])
    assert rows[0][1] == "Merge"  # the UI's word, not the job kind's internal name
    html = table_html(HEADERS, rows, "queue", "No jobs yet.")
    assert "&lt;b&gt;bad&lt;/b&gt;" in html and "<b>" not in html
    assert html.count('<td data-label="') == len(HEADERS) and '<td data-label="State">Failed</td>' in html
    assert '<td data-label="Progress"><div class="sd-progress sd-failed"' in html  # the bar, not its escaped text
    assert "No jobs yet." in table_html(HEADERS, [], "queue", "No jobs yet.")
