"""What the HTTP routes and the Gradio UI both call: one ``Services`` per server.

It turns A1111 request fields into queued jobs (validating everything a user can get wrong
before the job is queued), answers the listing routes from the model catalog, and keeps the
options. Generation itself happens in the job queue's worker (``sdcloud.jobs.generation``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sdcloud.api.a1111_request import to_generation_request
from sdcloud.api.ckpt_tools import CheckpointTools
from sdcloud.api.extras import ExtrasService
from sdcloud.api.image_input import decode_image
from sdcloud.api.models import Img2ImgRequest, Txt2ImgRequest
from sdcloud.api.options import OptionsStore, validate, validate_kept
from sdcloud.api.training import TrainingService
from sdcloud.catalog import DEMO_MODELS, ModelFile
from sdcloud.checkpoints.hashing import HashCache
from sdcloud.engine.request_rules import HIRES_UPSCALERS, LATENT_UPSCALE_MODES
from sdcloud.engine.request_rules import validate as validate_request
from sdcloud.engine.sampler_names import resolve_sampler, sampler_list, scheduler_list
from sdcloud.errors import BadRequest, Cancelled, NotFound, SdcloudError, Unsupported
from sdcloud.history import History
from sdcloud.image_files import image_bytes
from sdcloud.interrogate import Interrogator
from sdcloud.jobs import CANCELLED, FAILED, GPU_LANE, Job
from sdcloud.jobs.generation import generation_payload
from sdcloud.jobs.training import KIND as TRAIN_KIND
from sdcloud.runtime import Runtime

_INFO_SKIP = {
    "parameters",
    "exif",
    "loop",
    "background",
    "timestamp",
    "duration",
    "progressive",
    "progression",
    "icc_profile",
    "chromaticity",
    "photoshop",
    "dpi",
}


class JobError(SdcloudError):
    """A job that failed or was cancelled, with the status it failed with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Services:
    """The A1111 face of one ``Runtime`` (``sdcloud.runtime``): model selection, options,
    request checking and the listing routes. It wires nothing itself."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.persistence = runtime.persistence
        self.catalog = runtime.catalog
        self.host = runtime.host
        self.hashes: HashCache = runtime.hashes
        self.queue = runtime.queue
        self.session = runtime.session  # cost meter, limits
        self.extras = ExtrasService(self.settings, self.host, self.persistence.add)  # upscalers, face restorers
        self.interrogator = Interrogator(self.settings.models_root)  # /interrogate, img2img's Interrogate
        self.history = History(self.settings.outputs_path)  # /api/history, the History tab, Save/Zip
        self.options = OptionsStore(self.settings.state_path / "options.json")
        self.ckpt = CheckpointTools(self.settings, self.catalog, self.queue, self.hashes)
        self.selected_model: str | None = None  # the key new jobs use (A1111's sd_model_checkpoint)
        self.training = TrainingService(self.settings, self.queue, runtime.handlers[TRAIN_KIND])
        self.session.before_drain.append(self.training.runner.stop_all.set)  # a training saves its state first
        # the FleetJobQueue when generation goes to workers (serve --broker), else None
        self.fleet: Any = self.queue if getattr(self.queue, "is_fleet", False) else None
        from sdcloud.webhooks.jobs import JobWebhooks
        from sdcloud.webhooks.setup import make_sender

        self.webhooks = JobWebhooks(self.queue, make_sender(self.settings))
        from sdcloud.api.img2img_batch import BatchRunner

        self.batches = BatchRunner(self)  # img2img Batch over server folders
        self._started = False

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Load the start-up model (``settings.model``, else the first checkpoint) and run the
        queue. Idempotent: ``sdcloud serve`` calls it before the server starts, so a bad
        ``--model`` is a one-line error, not a failed start-up."""
        if self._started:
            return
        wanted = self.settings.model
        if wanted is None and self.catalog.checkpoints():
            wanted = self.catalog.checkpoints()[0].name
        if wanted is not None:
            key = self.resolve_model(wanted)
            startup = self.runtime.startup
            fetch = getattr(self.host.engine, "fetch_local", None)
            if fetch is not None:
                with startup.phase("model_fetch") as phase:
                    phase["detail"] = f"{key}: {fetch(key)}"
            with startup.phase("model_load", detail=key):
                self.set_model(key)
        self.runtime.start()
        self.webhooks.start()
        self._started = True

    def stop(self) -> None:
        """Finish the running job, then try to get every saved image into the store."""
        self.runtime.stop()
        self.webhooks.stop()
        self._started = False

    # models ----------------------------------------------------------------------------
    def resolve_model(self, name: str) -> str:
        """The key to load for an A1111 model name/title/hash, or ``NotFound``."""
        wanted = name.strip()
        bare = wanted[: wanted.rindex(" [")] if wanted.endswith("]") and " [" in wanted else wanted
        if bare in DEMO_MODELS:
            return bare
        try:
            return self.catalog.resolve("checkpoint", wanted).name
        except NotFound:
            for m in self.catalog.checkpoints():
                h = self._cached_sha(m)
                if h and wanted.lower() in (h, h[:10], h[:8]):
                    return m.name
            if self.fleet is not None:  # a model only the workers hold
                for w in self.fleet.workers():
                    if f"name:{bare}" in w.get("models", []):
                        return bare
            raise

    def set_model(self, name: str) -> None:
        """Load a checkpoint now (waits for the running job) and use it for new jobs."""
        key = self.resolve_model(name)
        if self.fleet is None:  # with workers, the model is loaded where the jobs run
            self.host.ensure_model(key)
        self.selected_model = key

    def unload_model(self) -> None:
        self.host.unload()

    def reload_model(self) -> None:
        if self.selected_model:
            self.host.ensure_model(self.selected_model)

    def _cached_sha(self, m: ModelFile) -> str | None:
        if not m.path.is_file():
            return None
        cached = self.hashes.get(m.path, compute=False)
        return cached.sha256 if cached else None

    def _title(self, m: ModelFile, sha: str | None) -> str:
        return f"{m.name} [{sha[:10]}]" if sha else m.name

    def _selected_entry(self) -> tuple[str, str | None] | None:
        """(title, sha256) of the model new jobs use: A1111's ``sd_model_checkpoint``. It is the
        loaded one except right after a job that overrode the model for itself."""
        key = self.selected_model
        if key is None:
            return None
        current = self.host.engine.current if self.host.model_key == key else None
        sha = current.sha256 if current else None
        if key in DEMO_MODELS:
            return key, sha
        for m in self.catalog.checkpoints():
            if m.name == key:
                sha = sha or self._cached_sha(m)
                return self._title(m, sha), sha
        return key, sha

    def sd_models(self) -> list[dict[str, Any]]:
        loaded_key, current = self.host.model_key, self.host.engine.current
        out = []
        for m in self.catalog.checkpoints():
            sha = current.sha256 if (m.name == loaded_key and current) else self._cached_sha(m)
            yaml = m.path.with_suffix(".yaml")
            out.append(
                {
                    "title": self._title(m, sha),
                    "model_name": m.model_name,
                    "hash": sha[:10] if sha else None,
                    "sha256": sha,
                    "filename": str(m.path),
                    "config": str(yaml) if m.path.is_file() and yaml.is_file() else None,
                }
            )
        for name in DEMO_MODELS:
            sha = current.sha256 if (name == loaded_key and current) else None
            out.append(
                {
                    "title": name,
                    "model_name": name,
                    "hash": sha[:10] if sha else None,
                    "sha256": sha,
                    "filename": name,
                    "config": None,
                }
            )
        return out

    def sd_vae(self) -> list[dict[str, Any]]:
        return [{"model_name": m.path.name, "filename": str(m.path)} for m in self.catalog.vaes()]

    def loras(self) -> list[dict[str, Any]]:
        out = []
        for m in self.catalog.loras():
            metadata = _safetensors_metadata(m.path)
            out.append(
                {
                    "name": m.stem,
                    "alias": metadata.get("ss_output_name") or m.stem,
                    "path": str(m.path),
                    "metadata": metadata,
                }
            )
        return out

    def embeddings(self) -> dict[str, Any]:
        loaded: dict[str, Any] = {}
        for m in self.catalog.embeddings():
            shape = vectors = None
            if m.path.suffix.lower() == ".safetensors":
                from sdcloud.checkpoints.safetensors_header import read_header

                try:
                    tensors = list(read_header(m.path).tensors.values())
                except SdcloudError:
                    tensors = []
                if tensors and len(tensors[0].shape) == 2:
                    vectors, shape = tensors[0].shape
            loaded[m.stem] = {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": shape,
                "vectors": vectors,
            }
        return {"loaded": loaded, "skipped": {}}

    def refresh(self) -> None:
        self.runtime.refresh()

    # static lists ----------------------------------------------------------------------
    def samplers(self) -> list[dict[str, Any]]:
        return sampler_list()

    def schedulers(self) -> list[dict[str, Any]]:
        return scheduler_list()

    def upscalers(self) -> list[dict[str, Any]]:
        return self.extras.upscaler_list()

    def latent_upscale_modes(self) -> list[dict[str, str]]:
        return [{"name": n} for n in LATENT_UPSCALE_MODES]

    @property
    def styles_path(self) -> Path:
        return self.settings.data_dir / "styles.csv"

    def prompt_styles(self) -> list[dict[str, Any]]:
        from sdcloud.api.styles import read_styles

        return read_styles(self.styles_path)

    def save_style(self, name: str, prompt: str, negative_prompt: str) -> list[dict[str, Any]]:
        from sdcloud.api.styles import save_style

        return save_style(self.styles_path, name, prompt, negative_prompt)

    def delete_style(self, name: str) -> list[dict[str, Any]]:
        from sdcloud.api.styles import delete_style

        return delete_style(self.styles_path, name)

    def cmd_flags(self) -> dict[str, Any]:
        """A1111's command-line flags as far as they have a meaning here (never secrets)."""
        s = self.settings
        return {
            "api": True,
            "listen": s.host not in ("127.0.0.1", "localhost", "::1"),
            "port": s.port,
            "server_name": s.host,
            "data_dir": str(s.data_dir),
            "ckpt_dir": str(s.checkpoints_path),
            "vae_dir": str(s.vae_path),
            "lora_dir": str(s.lora_path),
            "embeddings_dir": str(s.embeddings_path),
            "medvram": s.memory == "medvram",
            "lowvram": s.memory == "lowvram",
            "no_half": s.dtype == "fp32",
            "api_auth": None,
            "gradio_auth": None,
            "share": False,
            "nowebui": False,
            "api_log": False,
            "enable_insecure_extension_access": False,
        }

    def memory(self) -> dict[str, Any]:
        import psutil

        vm = psutil.virtual_memory()
        out: dict[str, Any] = {
            "ram": {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
        }
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available on this machine")
            free, total = torch.cuda.mem_get_info()
            stats = torch.cuda.memory_stats()
            out["cuda"] = {
                "system": {"free": free, "used": total - free, "total": total},
                "active": {
                    "current": stats.get("active_bytes.all.current", 0),
                    "peak": stats.get("active_bytes.all.peak", 0),
                },
                "allocated": {
                    "current": stats.get("allocated_bytes.all.current", 0),
                    "peak": stats.get("allocated_bytes.all.peak", 0),
                },
                "reserved": {
                    "current": stats.get("reserved_bytes.all.current", 0),
                    "peak": stats.get("reserved_bytes.all.peak", 0),
                },
                "inactive": {
                    "current": stats.get("inactive_split_bytes.all.current", 0),
                    "peak": stats.get("inactive_split_bytes.all.peak", 0),
                },
                "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
            }
        except Exception as err:  # no torch/CUDA: A1111 reports the error in place of the numbers
            out["cuda"] = {"error": str(err)}
        return out

    # options ---------------------------------------------------------------------------
    def options_get(self) -> dict[str, Any]:
        values = self.options.get()
        selected = self._selected_entry()
        values["sd_model_checkpoint"] = selected[0] if selected else None
        values["sd_checkpoint_hash"] = selected[1] if selected else None
        return values

    def options_set(self, changes: dict[str, Any]) -> None:
        if not isinstance(changes, dict):
            raise BadRequest("options must be a JSON object of option names and values")
        check_client_value(changes, "options")
        checkpoint = changes.get("sd_model_checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise BadRequest("sd_model_checkpoint must be a string (a title from /sdapi/v1/sd-models)")
        vae = changes.get("sd_vae")
        if isinstance(vae, str):
            self._vae_key(vae)  # unknown names are refused before anything changes
        validate(changes)
        validate_kept(changes)
        if checkpoint:
            selected = self._selected_entry()
            if not selected or checkpoint != selected[0]:
                self.set_model(checkpoint)
        self.options.update(changes)

    def _vae_key(self, name: str) -> str | None:
        if name in ("Automatic", "None", ""):
            return None
        return self.catalog.resolve("vae", name).name

    # generation ------------------------------------------------------------------------
    def submit(self, kind: str, request: dict[str, Any]) -> Job:
        """UI entry: A1111 request fields in, queued job out. Images are saved to the outputs
        folder unless ``save_images`` is false (A1111's UI saves every image)."""
        if kind not in ("txt2img", "img2img"):
            raise BadRequest(f"unknown generation kind '{kind}'")
        model_cls: type[BaseModel] = Txt2ImgRequest if kind == "txt2img" else Img2ImgRequest
        try:
            parsed = model_cls.model_validate({"save_images": True, **request})
        except ValidationError as err:
            raise BadRequest(f"invalid request: {_first_error(err)}") from None
        return self.submit_request(parsed)

    def submit_request(self, req: Txt2ImgRequest | Img2ImgRequest) -> Job:
        """Validate an A1111 request and queue it; everything a user can get wrong is
        refused here, before the job reaches the queue."""
        kind = "img2img" if isinstance(req, Img2ImgRequest) else "txt2img"
        webhook = req.webhook_url or self.settings.webhook_url
        if webhook:
            from sdcloud.webhooks import check_webhook_url

            check_webhook_url(webhook, self.settings.webhook_allow_private)
        for name in type(req).model_fields:
            if name not in ("init_images", "mask"):
                check_client_value(getattr(req, name), name)
        req = self._apply_infotext(req)
        script = self._find_script(req)
        from sdcloud.controlnet import requests as cn_requests

        unknown = [k for k in (req.alwayson_scripts or {}) if k != cn_requests.script_key(req.alwayson_scripts)]
        if unknown:
            raise Unsupported(f"always on script {unknown[0]} not found; this server has ControlNet only")
        cn_units, cn_files = cn_requests.prepare(
            req.alwayson_scripts or {}, self.settings.models_root / "ControlNet",
            lambda text, what: decode_image(text, self.settings, what), isinstance(req, Img2ImgRequest))
        opts = self.options.get()
        overrides = dict(req.override_settings or {})
        model_key = self.selected_model
        wanted = overrides.pop("sd_model_checkpoint", None)
        if isinstance(wanted, str) and wanted:
            with contextlib.suppress(NotFound):  # A1111 drops an unknown override silently
                model_key = self.resolve_model(wanted)
        clean = validate(overrides)
        opts.update(clean)
        opts.update({k: v for k, v in validate_kept(overrides).items() if k in REQUEST_OPTIONS})
        if isinstance(req, Img2ImgRequest) and not req.init_images:
            raise NotFound("Init image not found")
        prompt, negative = self._apply_styles(req)
        gen = to_generation_request(req, prompt, negative, opts)
        validate_request(gen, self.settings.limits, self.extras.upscalers)
        for field in ("refiner_checkpoint", "hr_checkpoint_name"):  # the job's worker loads them by key
            if getattr(gen, field):
                try:
                    setattr(gen, field, self.resolve_model(getattr(gen, field)))
                except NotFound as err:
                    raise BadRequest(f"{field}: {err}") from None
        restore = None
        if req.restore_faces:  # A1111 applies opts.face_restoration_model after generation
            restore = str(opts.get("face_restoration_model") or "CodeFormer")
            self.extras.faces.check(restore)  # 4xx now when it cannot run here
        vae_key = self._vae_key(opts["sd_vae"]) if isinstance(opts["sd_vae"], str) else None
        if model_key is None:
            raise BadRequest(
                "no model is loaded; start the server with --model NAME (or --model demo) "
                "or set the option sd_model_checkpoint"
            )
        files: dict[str, bytes] = {}
        init_names: list[str] = []
        for i, text in enumerate(gen.init_images):
            init_names.append(f"init-{i}.png")
            files[init_names[-1]] = image_bytes(decode_image(text, self.settings, f"init image {i}"))
        mask_name = None
        if gen.mask:
            mask_name = "mask.png"
            files[mask_name] = image_bytes(decode_image(gen.mask, self.settings, "mask"))
        echo = req.model_dump()
        echo.pop("webhook_url", None)  # may carry a token; not part of A1111's echo
        if isinstance(req, Img2ImgRequest) and not req.include_init_images:
            echo["init_images"] = None
            echo["mask"] = None
        payload = generation_payload(
            gen,
            model=model_key,
            vae=vae_key,
            init_images=init_names,
            mask=mask_name,
            save_images=req.save_images,
            send_images=req.send_images,
            samples_format=opts["samples_format"],
            jpeg_quality=opts["jpeg_quality"],
            return_grid=opts["return_grid"],
            preview_every=max(1, opts["show_progress_every_n_steps"]) if opts["live_previews_enable"] else 0,
            styles=req.styles or [],
            parameters=echo,
        )
        payload.update(controlnet=cn_units, restore_faces=restore)
        files.update(cn_files)
        if script is not None:
            payload["script"] = {"title": script.title, "plan": script.prepare(
                req.script_args, payload["request"], self.script_env(req, init_names), kind == "img2img")}
        if not req.override_settings_restore_afterwards:  # A1111 keeps the overrides
            self.options.update(clean)
            self.selected_model = model_key
        if webhook:
            payload["webhook"] = webhook
        job = self.queue.submit(kind, payload, files)
        if webhook:
            self.webhooks.queued(job, webhook)
        return job

    # scripts ---------------------------------------------------------------------------
    def _find_script(self, req: Txt2ImgRequest | Img2ImgRequest) -> Any:
        """The selectable script a request names (422 when unknown, as in A1111)."""
        from sdcloud.scripts import find

        if not req.script_name or req.script_name.strip().lower() == "none":
            return None
        script = find(req.script_name, isinstance(req, Img2ImgRequest))
        if script is None:
            raise Unsupported(f"Script '{req.script_name}' not found")
        return script

    def script_env(self, req: Txt2ImgRequest | Img2ImgRequest | None = None,
                   init_names: list[str] | None = None) -> Any:
        """What a script may look up while it checks its arguments (names resolve here)."""
        from sdcloud.api.styles import apply_styles as apply
        from sdcloud.engine.sampler_names import available_samplers
        from sdcloud.scripts import ScriptEnv

        def apply_styles(prompt: str, negative: str, names: list[str]) -> tuple[str, str]:
            return apply(self.prompt_styles(), names, prompt, negative)

        lim = self.settings.limits
        return ScriptEnv(
            resolve_model=self.resolve_model,
            resolve_vae=self._vae_key,
            resolve_sampler=resolve_sampler,
            apply_styles=apply_styles,
            upscalers=[u["name"] for u in self.upscalers()],
            hr_upscalers=[*HIRES_UPSCALERS,
                          *(n for n in self.extras.upscalers.names() if n not in ("None", *HIRES_UPSCALERS))],
            checkpoints=[m["title"] for m in self.sd_models()],
            vaes=[v["model_name"] for v in self.sd_vae()],
            samplers=available_samplers(),
            schedules=[s["label"] for s in scheduler_list()],
            styles=[s["name"] for s in self.prompt_styles()],
            seed_was_random=bool(req is not None and req.seed == -1),
            max_images=max(1, lim.max_batch_size * lim.max_n_iter),
            face_restorer=lambda: self._face_restorer(req),
        )

    def _face_restorer(self, req: Txt2ImgRequest | Img2ImgRequest | None) -> str:
        """The face restorer a request would use (A1111's face_restoration_model), 4xx if it cannot run."""
        override = (req.override_settings or {}).get("face_restoration_model") if req is not None else None
        name = str(override or self.options["face_restoration_model"] or "CodeFormer")
        self.extras.faces.check(name)
        return name

    def _apply_infotext(self, req: Txt2ImgRequest | Img2ImgRequest) -> Txt2ImgRequest | Img2ImgRequest:
        """Fill the fields the request did not set from its ``infotext`` (A1111 1.8+)."""
        if not req.infotext:
            return req
        from sdcloud.infotext import check_infotext_size, infotext_to_request_fields, parse_infotext

        check_infotext_size(req.infotext, "infotext")
        parsed = parse_infotext(req.infotext)
        fields = infotext_to_request_fields(parsed)
        extra = fields.pop("extra", {})
        if "Prompt" in parsed:
            fields.setdefault("prompt", parsed["Prompt"])
        if "Negative prompt" in parsed:
            fields.setdefault("negative_prompt", parsed["Negative prompt"])
        known = type(req).model_fields
        updates = {k: v for k, v in fields.items() if k in known and k not in req.model_fields_set}
        overrides = _infotext_overrides(fields, bool(self.options["disable_weights_auto_swap"]), extra)
        if "sd_vae" in overrides:
            try:
                self._vae_key(overrides["sd_vae"])
            except NotFound:  # a VAE this server lacks: the model's own is used, as A1111 falls back
                del overrides["sd_vae"]
        if overrides:  # A1111's get_override_settings: options written in the infotext
            updates["override_settings"] = {**overrides, **(req.override_settings or {})}
        try:
            return type(req).model_validate({**req.model_dump(), **updates})
        except ValidationError as err:
            raise BadRequest(f"infotext has a bad value: {_first_error(err)}") from None

    def _apply_styles(self, req: Txt2ImgRequest | Img2ImgRequest) -> tuple[str, str]:
        """A1111 styles: a style's ``{prompt}`` is replaced by the prompt, else it is appended."""
        prompt, negative = req.prompt, req.negative_prompt
        if not req.styles:
            return prompt, negative
        from sdcloud.api.styles import apply_styles

        return apply_styles(self.prompt_styles(), list(req.styles), prompt, negative)

    def generation_response(self, job: Job) -> dict[str, Any]:
        """The A1111 txt2img/img2img answer for a finished job (an error if it did not finish well)."""
        if job.state == FAILED:
            raise JobError(job.error or "generation failed", job.error_status or 500)
        if job.state == CANCELLED:
            raise JobError(job.error or "cancelled", Cancelled.status)
        if not job.finished_state:
            raise JobError(f"job '{job.id}' is still {job.state}", 409)
        result = job.result or {}
        images = []
        if job.payload.get("send_images", True):
            for path in self.runtime.image_files(job):
                try:
                    images.append(base64.b64encode(path.read_bytes()).decode("ascii"))
                except FileNotFoundError:
                    raise NotFound(f"an image of job '{job.id}' is no longer on disk") from None
        return {
            "images": images,
            "parameters": job.payload.get("parameters", {}),
            "info": json.dumps(result.get("info", {})),
        }

    def generate(self, req: Txt2ImgRequest | Img2ImgRequest, timeout: float | None = None) -> dict[str, Any]:
        """Queue and wait: the blocking form of what the A1111 routes do."""
        job = self.submit_request(req)
        return self.generation_response(self.queue.wait(job.id, timeout))

    # progress --------------------------------------------------------------------------
    def progress(self, skip_current_image: bool = False) -> dict[str, Any]:
        """``/sdapi/v1/progress``: idle is ``progress == 0`` and ``job_count == 0``."""
        job = self._foreground_job()
        waiting = any(j.state == "queued" for j in self.queue.list(finished_limit=0))
        state = {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        }
        if job is None:
            state["job_count"] = 1 if waiting else 0
            return {
                "progress": 0.0,
                "eta_relative": 0.0,
                "state": state,
                "current_image": None,
                "textinfo": None,
            }
        n_iter = int(job.payload.get("request", {}).get("n_iter", 1) or 1)
        state.update(
            {
                "job": f"task({job.id})",
                "job_count": job.job_count or n_iter,
                "job_no": job.job_no,
                "sampling_step": job.step,
                "sampling_steps": job.steps,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or time.time())),
            }
        )
        progress = min(1.0, 0.01 + job.progress)
        elapsed = time.time() - (job.started or time.time())
        image = None
        if not skip_current_image and job.preview is not None:
            image = job.preview  # already base64 (PNG; a small JPEG from a fleet worker)
        return {
            "progress": progress,
            "eta_relative": max(0.0, elapsed / progress - elapsed),
            "state": state,
            "current_image": image,
            "textinfo": None,
        }

    def _foreground(self) -> list[Job]:
        """The running jobs A1111's progress/interrupt/skip are about: those of the GPU lane
        (generation, checkpoint tools), not a long job in a lane of its own (training)."""
        kinds = self.runtime.kinds
        return [j for j in self.queue.running() if j.kind not in kinds or kinds[j.kind].lane == GPU_LANE]

    def _foreground_job(self) -> Job | None:
        jobs = self._foreground()
        return jobs[0] if jobs else None

    def interrupt(self) -> None:
        for job in self._foreground():
            self.queue.interrupt(job.id)

    def skip(self) -> None:
        for job in self._foreground():
            self.queue.skip(job.id)

    # queue -----------------------------------------------------------------------------
    def jobs(self, finished_limit: int = 20) -> list[Job]:
        return self.queue.list(finished_limit)

    def job(self, job_id: str) -> Job:
        return self.queue.get(job_id)

    def cancel(self, job_id: str) -> Job:
        return self.queue.cancel(job_id)

    def workers(self) -> list[dict[str, Any]]:
        """The fleet's workers (empty in single-box mode)."""
        return [] if self.fleet is None else self.fleet.workers()

    # images ----------------------------------------------------------------------------
    def png_info(self, image_b64: str) -> dict[str, Any]:
        from sdcloud.image_files import read_image_infotext
        from sdcloud.infotext import parse_infotext

        img = decode_image(image_b64, self.settings, "image")
        text = read_image_infotext(img) or ""
        items = {
            k: v
            for k, v in img.info.items()
            if isinstance(k, str)
            and k not in _INFO_SKIP
            and not k.startswith("jfif")
            and isinstance(v, (str, int, float))
        }
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


MAX_JSON_DEPTH = 32
"""Nesting accepted in any client value (script_args, override_settings, options): deeper
values are refused up front instead of failing when the answer is encoded."""


def check_client_value(value: Any, where: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """400 for what would only fail later: text with lone surrogates (not encodable as UTF-8)
    or nesting deeper than ``max_depth``. Iterative, so any depth is walked safely."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"{path} is nested more than {max_depth} levels deep")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(f"{path} holds a lone surrogate (not valid Unicode text)") from None
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, path, depth + 1))
                named = depth == 0 and isinstance(k, str) and k.isidentifier() and len(k) <= 64
                stack.append((v, f"{path}.{k}" if named else path, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, path, depth + 1) for v in item)


# infotext label -> the A1111 option it sets (A1111's infotext_to_setting_name_mapping), as a
# number or a flag; options the generation reads (REQUEST_OPTIONS)
_INFOTEXT_OPTIONS: dict[str, tuple[str, type]] = {
    "Schedule min sigma": ("sigma_min", float), "Schedule max sigma": ("sigma_max", float),
    "Schedule rho": ("rho", float), "Skip Early CFG": ("skip_early_cond", float),
    "NGMS all steps": ("s_min_uncond_all", bool),
    "Refiner switch by sampling steps": ("refiner_switch_by_sample_steps", bool),
    "Hires refiner": ("hires_fix_refiner_pass", str),
    "Discard penultimate sigma": ("always_discard_next_to_last_sigma", bool),
}
REQUEST_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise", "s_min_uncond", "s_min_uncond_all", "skip_early_cond",
                   "sigma_min", "sigma_max", "rho", "always_discard_next_to_last_sigma")
"""A1111 options kept as A1111 keeps them that a request reads (``override_settings`` applies them)."""


def _infotext_overrides(fields: dict[str, Any], keep_model: bool, extra: dict[str, str] | None = None
                        ) -> dict[str, Any]:
    """Options an infotext sets (A1111 applies them as ``override_settings``): ``Clip skip``,
    ``VAE``, the sampling options (``Schedule rho``, ``Skip Early CFG``, ...) and, unless
    ``disable_weights_auto_swap`` (A1111's default) is on, the model."""
    out: dict[str, Any] = {}
    for label, text in (extra or {}).items():
        if label in _INFOTEXT_OPTIONS:
            key, kind = _INFOTEXT_OPTIONS[label]
            try:
                out[key] = text == "True" if kind is bool else kind(text)
            except ValueError:
                continue
    if isinstance(fields.get("clip_skip"), int):
        out["CLIP_stop_at_last_layers"] = fields["clip_skip"]
    if isinstance(fields.get("vae"), str) and fields["vae"]:
        out["sd_vae"] = fields["vae"]
    if not keep_model:
        model = fields.get("model_hash") or fields.get("model")
        if isinstance(model, str) and model:
            out["sd_model_checkpoint"] = model
    return out


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    if path.suffix.lower() != ".safetensors":
        return {}
    from sdcloud.checkpoints.safetensors_header import read_header

    try:
        return dict(read_header(path).metadata)
    except (SdcloudError, OSError):
        return {}


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    return f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
