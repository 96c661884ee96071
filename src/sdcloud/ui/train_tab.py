"""The Train tab: upload or pick a dataset, check it, pick a memory preset, train a LoRA as a
queued job with a live loss chart and sample images. Calls ``services.training`` only (the
same functions ``/api/train`` uses)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from sdcloud.errors import SdcloudError
from sdcloud.ui.i18n import DATA_CHOICES_CLASS
from sdcloud.ui.labels import LR_SCHEDULERS
from sdcloud.ui.progress import bar_html, busy_html, progress_html

OPTIMIZERS = ["AdamW", "AdamW8bit", "Prodigy", "Lion"]
PHASES = {"loading": "loading the model", "caching": "caching latents", "class images": "making class images",
          "saving": "saving", "stopped": "stopping"}
"""The trainer's phases as the bar says them (training itself needs no word)."""
RESUME_HINT = "the state is saved; tick Resume and press Train to continue"
SCHEDULERS = LR_SCHEDULERS  # (label, value): the words shown, the training option's name sent


def _datasets(services: Any) -> list[str]:
    return [d["name"] for d in services.training.datasets()]


def _models(services: Any) -> list[str]:
    return ["demo", "demo-xl"] + [m.name for m in services.catalog.checkpoints() if m.path.is_file()]


def _preset_choices(services: Any) -> list[tuple[str, str]]:
    return [("None", "")] + [(f"{k}: {v['description']}", k) for k, v in services.training.presets().items()]


def _report_md(report: dict[str, Any]) -> str:
    lines = [f"**{report['images']}** image(s), {report['reg_images']} regularisation, "
             f"{report['steps_per_epoch_images']} samples per epoch",
             "Buckets: " + (", ".join(f"{k}: {v}" for k, v in report["buckets"].items()) or "none")]
    if report["missing_captions"]:
        lines.append(f"Captions missing: {len(report['missing_captions'])} (class tokens used)")
    lines += [f"⚠ {e}" for e in report["errors"]]
    lines.append("Ready to train." if report["ok"] else "**Not ready**: fix the problems above.")
    return "\n\n".join(lines)


def training_bar(st: dict[str, Any]) -> str:
    """The training job's bar (``st``: the ``/api/train/{id}`` status): step, share, loss,
    speed and ETA while it runs; where the LoRA is and how to use it when done."""
    job = SimpleNamespace(**{k: st.get(k) for k in ("state", "progress", "step", "steps", "eta_seconds",
                                                      "position", "error")})
    detail = [f"loss {st['losses'][-1][1]:.4f}" if st.get("losses") else "",
              f"{st['it_s']:.2f} it/s" if st.get("it_s") else ""]
    phase = PHASES.get(str(st.get("phase")))
    label = f"Training ({phase})" if phase else "Training"
    if st.get("state") == "cancelled" or (st.get("state") == "done" and st.get("interrupted")):
        return bar_html("cancelled", float(st.get("progress") or 0),
                        f"Stopped at step {st.get('step') or 0}/{st.get('steps') or 0}: " + RESUME_HINT)
    r = st.get("result") or {}
    done = f"Done: {r.get('lora')} is in models/Lora — use it as <lora:{r.get('name')}:0.8>"
    return progress_html(job, label=label, detail=" · ".join(d for d in detail if d), done=done)


def train_tab(services: Any) -> gr.Timer:
    """Build the tab; returns its poll timer (active only while a training job is watched)."""
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### Dataset")
            with gr.Row():
                dataset = gr.Dropdown(_datasets(services), value=None, label="Dataset (in datasets/)",
                                      allow_custom_value=True, elem_id="train_dataset",
                                      elem_classes=[DATA_CHOICES_CLASS])
                refresh = gr.Button("↻", scale=0, min_width=48, elem_id="train_refresh")
            files = gr.File(file_count="multiple", label="Upload images + .txt captions (or a .zip)",
                            elem_id="train_files")
            folder = gr.Textbox(label="Folder (kohya repeats_concept, e.g. 10_sks cat; optional)",
                                elem_id="train_folder")
            with gr.Row():
                upload = gr.Button("Upload", elem_id="train_upload")
                check = gr.Button("Check dataset", elem_id="train_check")
            report = gr.Markdown("", elem_id="train_report")
        with gr.Column(scale=1):
            gr.Markdown("### Training")
            with gr.Row():
                model = gr.Dropdown(_models(services), value="demo", label="Base model", elem_id="train_model",
                                    elem_classes=[DATA_CHOICES_CLASS])
                name = gr.Textbox(label="LoRA name", placeholder="mychar", elem_id="train_name")
            preset = gr.Dropdown(_preset_choices(services), value="", label="Memory preset (per family and VRAM)",
                                 elem_id="train_preset")
            with gr.Row():
                steps = gr.Number(1500, label="Steps", precision=0, elem_id="train_steps")
                rank = gr.Number(16, label="Rank (dim)", precision=0, elem_id="train_rank")
                alpha = gr.Number(8, label="Alpha", elem_id="train_alpha")
                lr = gr.Number(1e-4, label="Learning rate", elem_id="train_lr")
            with gr.Row():
                resolution = gr.Number(512, label="Resolution", precision=0, elem_id="train_resolution")
                batch = gr.Number(2, label="Batch size", precision=0, elem_id="train_batch")
                seed = gr.Number(1, label="Seed", precision=0, elem_id="train_seed")
            with gr.Row():
                optimizer = gr.Dropdown(OPTIMIZERS, value="AdamW", label="Optimizer", elem_id="train_optimizer",
                                        elem_classes=[DATA_CHOICES_CLASS])
                scheduler = gr.Dropdown(SCHEDULERS, value="constant", label="LR scheduler",
                                        elem_id="train_scheduler")
                te = gr.Checkbox(False, label="Train text encoder", elem_id="train_te")
            with gr.Row():
                sample_every = gr.Number(0, label="Sample every N steps", precision=0, elem_id="train_sample_every")
                sample_prompt = gr.Textbox(label="Sample prompt", elem_id="train_sample_prompt")
            with gr.Row():
                resume = gr.Checkbox(False, label="Resume from the saved state", elem_id="train_resume")
                restart = gr.Checkbox(False, label="Start over (drop an unfinished run's state)",
                                      elem_id="train_restart")
            with gr.Row():
                start = gr.Button("Train", variant="primary", elem_id="train_start")
                cancel = gr.Button("Stop (state is saved)", elem_id="train_cancel")
    status = gr.HTML("", elem_id="train_status")
    with gr.Row():
        chart = gr.LinePlot(x="step", y="loss", title="Loss", elem_id="train_loss", scale=1)
        gallery = gr.Gallery(label="Samples", columns=4, height=280, elem_id="train_samples", scale=1)
    job_id = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    def do_upload(ds: str, up: list[Any] | None, sub: str) -> tuple[str, Any]:
        if not up:
            raise gr.Error("Choose files to upload first.")
        try:
            items = [(Path(f if isinstance(f, str) else f.name).name,
                      Path(f if isinstance(f, str) else f.name).read_bytes()) for f in up]
            out = services.training.upload(ds or "", items, sub or "")
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        return f"Saved {out['saved']} file(s) into **{ds}**.", gr.Dropdown(choices=_datasets(services), value=ds)

    def do_check(ds: str, res: float) -> str:
        try:
            return _report_md(services.training.check(ds or "", int(res or 512)))
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None

    def submit(ds, mdl, nm, pr, st, rk, al, lr_, res, bs, sd, opt, sch, te_, se, sp, rs, rst=False):  # noqa: ANN001, ANN202
        from sdcloud.api.training import TrainRequest

        options = {"steps": int(st), "rank": int(rk), "alpha": float(al), "lr": float(lr_),
                   "resolution": int(res), "batch": int(bs), "seed": int(sd), "optimizer": opt, "scheduler": sch,
                   "train_text_encoder": bool(te_), "sample_every": int(se or 0)}
        if sp:
            options["sample_prompt"] = sp
        if pr:  # the preset decides memory options; the form's values would override them
            for key in ("resolution", "batch", "rank", "alpha", "optimizer", "train_text_encoder"):
                options.pop(key, None)
        try:
            job = services.training.submit(TrainRequest(dataset=ds or "", model=mdl or "demo", name=nm or "",
                                                        preset=pr or None, resume=bool(rs), restart=bool(rst),
                                                        options=options))
        except SdcloudError as exc:
            raise gr.Error(str(exc)) from None
        return job.id, progress_html(job, label=f"Training {nm}"), gr.Timer(active=True)

    def watch(current: str | None) -> tuple[str, Any, Any, Any]:
        if not current:
            return "", gr.skip(), gr.skip(), gr.Timer(active=False)
        import pandas as pd

        st = services.training.status(current)
        losses = pd.DataFrame(st["losses"] or [], columns=["step", "loss"])
        samples = [(s["path"], f"step {s['step']}") for s in services.training.runner.live.get(current, {})
                   .get("samples", [])]
        return training_bar(st), losses, samples, gr.Timer(active=st["state"] in ("queued", "running"))

    def stop(current: str | None) -> str:
        if not current:
            return ""
        services.cancel(current)
        return busy_html("Stopping: the state is saved first")

    refresh.click(lambda: gr.Dropdown(choices=_datasets(services)), outputs=dataset, show_progress="hidden")
    upload.click(do_upload, inputs=[dataset, files, folder], outputs=[report, dataset])
    check.click(do_check, inputs=[dataset, resolution], outputs=report)
    start.click(submit, inputs=[dataset, model, name, preset, steps, rank, alpha, lr, resolution, batch, seed,
                                optimizer, scheduler, te, sample_every, sample_prompt, resume, restart],
                outputs=[job_id, status, timer])
    cancel.click(stop, inputs=job_id, outputs=status)
    timer.tick(watch, inputs=job_id, outputs=[status, chart, gallery, timer], show_progress="hidden")
    return timer
