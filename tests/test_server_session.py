"""The cost meter and the session guard in a real ``sdcloud serve``: ``/api/session`` answers
while it runs, and at ``--max-hours`` the server finishes its running job, flushes the outbox
to the store and exits by itself with code 0."""

from __future__ import annotations

import threading
import time

from conftest import launch

STOP_MARGIN_S = 300  # the guard stops this long before the limit (sdcloud.cloud.meter)
RUN_S = 30  # seconds from start-up to the stop: enough for the server to come up on a busy box


def test_max_hours_warns_then_finishes_the_job_flushes_and_exits_0(tmp_path):
    store = tmp_path / "volume"
    store.mkdir()
    max_hours = (STOP_MARGIN_S + RUN_S) / 3600
    server = launch(tmp_path / "data", "--max-hours", f"{max_hours:.6f}", "--price-per-hour", "0.5",
                    "--store", str(store))
    try:
        with server.client() as c:
            snap = c.get("/api/session").json()
            assert snap["state"] == "warned"  # the limit is less than 15 minutes away from the start
            assert "--max-hours" in snap["warning"]
            assert snap["limit"]["reason"] == "max_hours"
            assert snap["price_per_hour"] == 0.5 and snap["currency"] == "USD"
            assert snap["price_source"] == "--price-per-hour"
            to_stop = snap["limit"]["seconds_left"] - STOP_MARGIN_S
            assert to_stop > 3, f"the server took too long to start ({snap['elapsed_s']} s)"
            time.sleep(to_stop - 3)
            later = c.get("/api/session").json()
            assert later["elapsed_s"] > snap["elapsed_s"] and later["spend"] > 0

            answer: dict = {}

            def generate() -> None:  # a job still running when the stop comes
                r = c.post("/sdapi/v1/txt2img", json={"prompt": "last job", "width": 96, "height": 96,
                                                       "steps": 10, "batch_size": 2, "save_images": True})
                answer.update(status=r.status_code, body=r.json())

            worker = threading.Thread(target=generate)
            worker.start()
            rc = server.proc.wait(timeout=240)
            worker.join(timeout=30)
    finally:
        server.stop()
    log = server.log()
    assert rc == 0, log[-3000:]
    assert answer["status"] == 200 and len(answer["body"]["images"]) == 3  # grid + 2: the job finished
    assert "stopping (max_hours)" in log and "jobs finished, outbox flushed" in log
    saved = sorted(p.relative_to(tmp_path / "data" / "outputs") for p in (tmp_path / "data" / "outputs").rglob("*.png"))
    assert len(saved) == 3
    for rel in saved:  # flushed to the store before the exit
        assert (store / "outputs" / rel).read_bytes() == (tmp_path / "data" / "outputs" / rel).read_bytes()
