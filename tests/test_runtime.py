"""The composition root: a worker can build it without the HTTP package, and a job submitted to
its queue runs through the registered handler, reports to the injected observers, returns
output-relative keys and reaches the store through the outbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sdcloud.engine.types import GenerationRequest
from sdcloud.jobs import DONE, JobKind, LocalJobQueue
from sdcloud.jobs.generation import generation_payload
from sdcloud.jobs.registry import builtin_kinds
from sdcloud.runtime import Runtime
from sdcloud.settings import Settings


def test_runtime_imports_no_http_ui_or_torch() -> None:
    code = ("import sys, sdcloud.runtime; bad = [m for m in ('fastapi', 'gradio', 'torch', 'sdcloud.api') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_job_runs_through_the_runtime_and_reaches_the_store(tmp_path: Path, engine: object) -> None:
    store = tmp_path / "drive"
    store.mkdir()
    settings = Settings.load({"data_dir": tmp_path / "data", "store": str(store)}, env={})
    kinds = builtin_kinds()
    kinds.register(JobKind("echo", lambda runtime: lambda ctx: {"settings": str(runtime.settings.data_dir)},
                           lane="other"))
    runtime = Runtime(settings, engine=engine, kinds=kinds, restore_session=False)
    seen: list[tuple[int, float]] = []
    runtime.generation_observers.append(lambda _engine, req, result, seconds: seen.append((req.steps, seconds)))
    runtime.start(watch_session=False)
    try:
        req = GenerationRequest(prompt="a cat", steps=2, width=64, height=64, batch_size=2, seed=5)
        job = runtime.queue.submit("txt2img", generation_payload(req, model="demo", return_grid=False))
        echo = runtime.queue.submit("echo", {})
        job = runtime.queue.wait(job.id, timeout=300)
        assert job.state == DONE, job.error
        keys = job.result["images"]
        assert [Path(k).name for k in keys] == ["00000-5.png", "00001-6.png"]
        assert all(not Path(k).is_absolute() and k.startswith("txt2img-images/") for k in keys)
        files = runtime.image_files(job)
        assert files == [settings.outputs_path / k for k in keys]
        assert seen and seen[0][0] == 2  # the observer saw the finished generation
        assert runtime.queue.wait(echo.id, timeout=30).result == {"settings": str(settings.data_dir)}
    finally:
        runtime.stop()  # flushes the outbox
    for key, path in zip(keys, files, strict=True):
        assert (store / "outputs" / key).read_bytes() == path.read_bytes()


def test_a_queue_backend_gets_the_handlers_the_registry_built(tmp_path: Path, engine: object) -> None:
    settings = Settings.load({"data_dir": tmp_path / "data"}, env={})
    made: list = []

    def backend(runtime: Runtime) -> LocalJobQueue:  # what a Celery backend's factory looks like
        made.append(sorted(runtime.handlers))
        return LocalJobQueue(tmp_path / "elsewhere", runtime.handlers)

    runtime = Runtime(settings, engine=engine, queue=backend, restore_session=False)
    assert made == [sorted(builtin_kinds().names())]
    assert isinstance(runtime.queue, LocalJobQueue) and runtime.queue.root == tmp_path / "elsewhere" / "jobs"
    assert runtime.handlers["txt2img"] is runtime.handlers["img2img"]  # one runner for both kinds


def test_the_first_image_counts_when_it_is_not_saved(tmp_path: Path, engine: object) -> None:
    """A1111's API answers without saving by default: the start-up timeline's first image is
    the first one made, not the first one written to the outputs folder."""
    settings = Settings.load({"data_dir": tmp_path / "data"}, env={})
    runtime = Runtime(settings, engine=engine, restore_session=False)
    runtime.start(watch_session=False)
    try:
        assert runtime.startup.to_dict()["first_image_s"] is None
        req = GenerationRequest(prompt="a cat", steps=2, width=64, height=64, seed=5)
        job = runtime.queue.submit("txt2img", generation_payload(req, model="demo", save_images=False))
        assert runtime.queue.wait(job.id, timeout=300).state == DONE
        startup = runtime.startup.to_dict()
        assert startup["first_image_s"] is not None and not list(settings.outputs_path.rglob("*.png"))
        assert [p["detail"] for p in startup["phases"] if p["name"] == "first_image"] == ["txt2img (not saved)"]
    finally:
        runtime.stop()


def test_one_face_restorer_set_per_runtime(tmp_path: Path, engine: object) -> None:
    """restore_faces and the Extras tab use the engine's FaceRestorers: a restorer model (and the
    face detector) loads once per runtime, not once per job."""
    from sdcloud.api.extras import ExtrasService
    from sdcloud.jobs.generation import face_restorers
    from sdcloud.upscalers.faces import FaceRestorers

    settings = Settings.load({"data_dir": tmp_path / "data"}, env={})
    runtime = Runtime(settings, engine=engine, restore_session=False)
    faces = face_restorers(settings, runtime.host.engine)
    assert isinstance(faces, FaceRestorers) and faces is engine.faces  # type: ignore[attr-defined]
    assert face_restorers(settings, runtime.host.engine) is faces  # the next job: the same one
    assert ExtrasService(settings, runtime.host).faces is faces

    class Bare:  # an engine without restorers of its own (a test double) keeps the first one made
        device = None

    bare = Bare()
    assert face_restorers(settings, bare) is face_restorers(settings, bare)
