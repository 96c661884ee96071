"""The cost meter and the session guard in a real server (the app, services and runtime that
``sdcloud serve`` builds, served by uvicorn on a loopback port in this process): ``/api/session``
answers while it runs, and at ``--max-hours`` the server finishes its running job, flushes the
outbox to the store and exits by itself with code 0. The meter's clock is injected, so the
half-minute to the stop passes at once instead of in real time."""

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
from waiting import wait_until

pytestmark = pytest.mark.slow  # a real server

STOP_MARGIN_S = 300  # the guard stops this long before the limit (sdcloud.cloud.meter)
RUN_S = 30  # seconds from start-up to the stop


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_max_hours_warns_then_finishes_the_job_flushes_and_exits_0(tmp_path, capsys):
    store = tmp_path / "volume"
    store.mkdir()
    max_hours = (STOP_MARGIN_S + RUN_S) / 3600
    port = free_port()
    settings = Settings.load({"data_dir": tmp_path / "data", "model": "demo", "host": "127.0.0.1", "port": port,
                              "max_hours": max_hours, "price_per_hour": 0.5, "store": str(store)})
    clock = FakeClock()
    services = Services(Runtime(settings, clock=clock))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services, ui=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    services.session.on_exit = lambda _code: setattr(server, "should_exit", True)  # as `sdcloud serve` does
    services.start()
    serving = threading.Thread(target=server.run)
    serving.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            wait_until(lambda: server.started, 60, message="the server to listen")
            snap = c.get("/api/session").json()
            assert snap["state"] == "warned"  # the limit is less than 15 minutes away from the start
            assert "--max-hours" in snap["warning"]
            assert snap["limit"]["reason"] == "max_hours"
            assert snap["price_per_hour"] == 0.5 and snap["currency"] == "USD"
            assert snap["price_source"] == "--price-per-hour"
            to_stop = snap["limit"]["seconds_left"] - STOP_MARGIN_S
            assert to_stop > 3, f"the server took too long to start ({snap['elapsed_s']} s)"
            clock.advance(to_stop - 3)
            later = c.get("/api/session").json()
            assert later["elapsed_s"] > snap["elapsed_s"] and later["spend"] > 0

            answer: dict = {}

            def generate() -> None:  # a job still running when the stop comes
                r = c.post("/sdapi/v1/txt2img", json={"prompt": "last job", "width": 96, "height": 96,
                                                       "steps": 10, "batch_size": 2, "save_images": True})
                answer.update(status=r.status_code, body=r.json())

            worker = threading.Thread(target=generate)
            worker.start()
            wait_until(lambda: c.get("/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1, 120,
                       message="the last job to run")
            clock.advance(3)
            serving.join(timeout=240)
            worker.join(timeout=30)
    finally:
        server.should_exit = True
        serving.join(timeout=30)
    rc = services.session.exit_code
    log = capsys.readouterr().err
    assert rc == 0, log[-3000:]
    assert answer["status"] == 200 and len(answer["body"]["images"]) == 3  # grid + 2: the job finished
    assert "stopping (max_hours)" in log and "jobs finished, outbox flushed" in log
    saved = sorted(p.relative_to(tmp_path / "data" / "outputs") for p in (tmp_path / "data" / "outputs").rglob("*.png"))
    assert len(saved) == 3
    for rel in saved:  # flushed to the store before the exit
        assert (store / "outputs" / rel).read_bytes() == (tmp_path / "data" / "outputs" / rel).read_bytes()
