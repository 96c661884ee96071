"""The cost meter's graceful stop with a training running (a real server in this process, its
meter clock injected as in test_server_session): the training saves its resumable state, the
state reaches the store before the server exits, and no LoRA is written."""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn

from conftest import free_port
from sdcloud.api.app import create_app
from sdcloud.api.services import Services
from sdcloud.runtime import Runtime
from sdcloud.settings import Settings
from test_server_session import RUN_S, STOP_MARGIN_S, FakeClock
from training_data import make_dataset
from waiting import wait_until

pytestmark = pytest.mark.slow  # a real server


def test_the_session_guard_stop_saves_a_running_trainings_state_to_the_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDCLOUD_TEST_TRAIN_STEP_DELAY", "0.05")
    store = tmp_path / "volume"
    store.mkdir()
    data = tmp_path / "data"
    make_dataset(data / "datasets" / "mychar")
    port = free_port()
    settings = Settings.load({"data_dir": data, "model": "demo", "host": "127.0.0.1", "port": port,
                              "max_hours": (STOP_MARGIN_S + RUN_S) / 3600, "price_per_hour": 0.5,
                              "store": str(store)})
    clock = FakeClock()
    services = Services(Runtime(settings, clock=clock))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services, ui=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    services.session.on_exit = lambda _code: setattr(server, "should_exit", True)
    services.start()
    serving = threading.Thread(target=server.run)
    serving.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            wait_until(lambda: server.started, 60, message="the server to listen")
            r = c.post("/api/train", json={"dataset": "mychar", "model": "demo", "name": "night",
                                           "options": {"steps": 5000, "rank": 4, "resolution": 64, "batch": 2,
                                                       "save_state_every": 0}})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_until(lambda: c.get(f"/api/train/{job_id}").json()["step"] >= 3, 180,
                       message="the training to run")
            snap = c.get("/api/session").json()
            clock.advance(snap["limit"]["seconds_left"] - STOP_MARGIN_S + 1)  # the guard's stop
            serving.join(timeout=240)
            assert not serving.is_alive()
    finally:
        server.should_exit = True
        serving.join(timeout=30)
    log = capsys.readouterr().err
    assert services.session.exit_code == 0, log[-3000:]
    assert "stopping (max_hours)" in log
    local = sorted((data / ".sdcloud" / "train" / "night").glob("step-*/meta.json"))
    assert len(local) == 1
    step = local[0].parent.name
    assert int(step.split("-")[1]) >= 3
    for name in ("lora.safetensors", "trainer.pt", "meta.json"):  # on the store before the exit
        assert (store / "train" / "night" / step / name).read_bytes() == (local[0].parent / name).read_bytes()
    assert not (data / "models" / "Lora" / "night.safetensors").exists()
