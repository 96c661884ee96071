"""Property-based fuzzing of every route from the server's own OpenAPI schema (schemathesis):
valid and invalid requests alike must never get a 5xx, and the server keeps answering."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict

EXAMPLES = 12
# keep generated requests that pass validation cheap (the demo model on a CPU); values outside
# the limits are left alone so the range checks are still exercised
CHEAP = {"width": 64, "height": 64, "steps": 1, "batch_size": 1, "n_iter": 1, "hr_second_pass_steps": 1}
LIMITS = {"width": 256, "height": 256, "steps": 40, "batch_size": 4, "n_iter": 2, "hr_second_pass_steps": 40}


def cheapen(body: Any) -> None:
    if not isinstance(body, dict):
        return
    for key, low in CHEAP.items():
        value = body.setdefault(key, low)  # A1111's defaults (512x512, 50 steps) are above the test limits
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= LIMITS[key]:
            body[key] = low
    if body.get("enable_hr") is True:
        body["hr_scale"], body["hr_resize_x"], body["hr_resize_y"] = 1.0, 0, 0


def test_no_route_answers_5xx(sdcloud_server: Any) -> None:
    url = sdcloud_server.url
    spec = httpx.get(url + "/openapi.json").json()
    options_before = httpx.get(url + "/sdapi/v1/options").json()
    schema = from_dict(spec)
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40  # every route is fuzzed
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                if case.path.endswith("2img"):
                    cheapen(case.body)
                response = case.call(base_url=url, timeout=300)
                statuses.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} {case.body!r:.300} -> "
                        f"{response.status_code} {response.text[:300]}"
                    )

            try:
                call()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # a route without inputs has no invalid form
    # leave the shared server as it was: options back, nothing left in the queue
    httpx.post(url + "/sdapi/v1/options", json=options_before)
    for job in httpx.get(url + "/api/queue", params={"finished": 0}).json()["jobs"]:
        httpx.post(f"{url}/api/queue/{job['id']}/cancel")
    assert not failures, "\n".join(failures[:20])
    assert 200 in statuses["POST /sdapi/v1/txt2img"]  # generated requests reached the engine, too
    assert httpx.get(url + "/sdapi/v1/progress").status_code == 200
    ok = httpx.post(
        url + "/sdapi/v1/txt2img",
        json={"prompt": "after fuzzing", "width": 64, "height": 64, "steps": 1},
        timeout=300,
    )
    assert ok.status_code == 200
