"""A server killed (SIGKILL) with a running job and queued ones runs them all after restart:
the queue is journaled in SQLite in the data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import TIGHT_LIMITS
from sdcloud.jobs import FINISHED
from waiting import wait_until


def test_killed_server_finishes_its_queue_after_restart(start_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data_dir=data, env=TIGHT_LIMITS)
    with server.client() as c:
        running = c.post(
            "/api/txt2img", json={"prompt": "cut off", "width": 64, "height": 64, "steps": 12, "seed": 1}
        ).json()
        queued = [
            c.post(
                "/api/txt2img",
                json={"prompt": f"queued {i}", "width": 64, "height": 64, "steps": 1, "seed": 10 + i},
            ).json()
            for i in range(3)
        ]
        wait_until(lambda: c.get(f"/api/jobs/{running['id']}").json()["state"] == "running", 120,
                   message="the first job to run")
    server.kill()

    again = start_server(data_dir=data, env=TIGHT_LIMITS)
    with again.client() as c:
        ids = [running["id"], *(j["id"] for j in queued)]

        def all_finished() -> list[dict] | None:
            jobs = [c.get(f"/api/jobs/{i}").json() for i in ids]
            return jobs if all(j["state"] in FINISHED for j in jobs) else None

        jobs = wait_until(all_finished, 240, 0.1, "the four jobs to finish")
        assert [j["state"] for j in jobs] == ["done"] * 4
        assert [j["attempts"] for j in jobs] == [2, 1, 1, 1]  # the cut-off job ran again
        assert [j["result"]["info"]["all_seeds"] for j in jobs] == [[1], [10], [11], [12]]
        assert jobs[0]["finished"] < jobs[1]["started"]  # still first in, first out
        for job in jobs:
            assert c.get(job["result"]["images"][0]).status_code == 200
