"""The live cost meter and the graceful stop, with a fake clock for the limits and the real
job queue, outbox and local store for the work that must not be lost."""

from __future__ import annotations

import threading

import pytest

from sdcloud.cloud.meter import CostMeter, SessionGuard, catalog_price, platform_limit_s, uptime_s
from sdcloud.cloud.platforms import detect
from sdcloud.cloud.price_catalog import load_price_catalog
from sdcloud.jobs.local import LocalJobQueue
from sdcloud.storage.local import LocalStore
from sdcloud.storage.outbox import Outbox
from waiting import wait_until


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


H = 3600.0


def test_meter_reports_elapsed_and_spend():
    clock = FakeClock()
    meter = CostMeter(0.60, "USD", "--price-per-hour", clock=clock, wall_clock=lambda: 1_800_000_000.0)
    clock.advance(1.5 * H)
    snap = meter.snapshot()
    assert snap["elapsed_s"] == 5400.0
    assert snap["spend"] == pytest.approx(0.90)
    assert snap["price_per_hour"] == 0.60 and snap["currency"] == "USD"
    assert snap["started_at"].startswith("2027-01-15T")  # the wall time of the start, not of now
    assert CostMeter(None, clock=clock).snapshot()["spend"] is None


@pytest.fixture
def server(tmp_path):
    """A real LocalJobQueue whose 'generation' writes an image into a real Outbox -> LocalStore."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    store_root = tmp_path / "store"
    store_root.mkdir()
    outbox = Outbox(tmp_path / "state", LocalStore(store_root), root=outputs, backoff=(0.05, 0.2), poll=0.05)
    outbox.start()
    release = threading.Event()

    def generate(ctx):
        release.wait(10)  # the job is mid-generation until released
        image = outputs / f"{ctx.job.id}.png"
        image.write_bytes(b"\x89PNG fake image bytes for " + ctx.job.id.encode())
        outbox.add(image, infotext=f"{ctx.payload['prompt']}\nSteps: 20")
        return {"images": [image.name]}

    queue = LocalJobQueue(tmp_path / "state", {"txt2img": generate})
    queue.start()
    yield {
        "queue": queue,
        "outbox": outbox,
        "release": release,
        "store": store_root,
        "state": tmp_path / "state",
    }
    release.set()
    queue.stop(timeout=5)
    outbox.close()


def test_budget_warns_15_minutes_before_then_drains_flushes_and_exits(server):
    queue, outbox = server["queue"], server["outbox"]
    running = queue.submit("txt2img", {"prompt": "a lighthouse"})
    queued = queue.submit("txt2img", {"prompt": "a harbour"})
    wait_until(queue.running, 5, message="the first job to run")
    assert [j.id for j in queue.running()] == [running.id]  # running() lists the running jobs

    events: list[str] = []
    exits: list[int] = []
    clock = FakeClock()
    # The running job finishes 0.3 s after the stop begins: the drain must wait for it.
    finisher = threading.Timer(0.3, server["release"].set)

    def drain(timeout):
        events.append("drain")
        finisher.start()
        queue.stop(timeout=timeout)
        return not queue.running()

    def flush(timeout):
        events.append("flush")
        return outbox.stop(flush=True, timeout=timeout)

    guard = SessionGuard(
        CostMeter(0.60, "USD", clock=clock),
        budget=3.0,  # $3 at $0.60/h = 5 h
        on_warn=lambda msg, left: events.append(f"warn {int(left)}"),
        drain_jobs=drain,
        flush_outbox=flush,
        exit=lambda code: (events.append("exit"), exits.append(code)),
    )
    assert guard.next_limit.reason == "budget" and guard.next_limit.at_s == pytest.approx(5 * H)

    clock.advance(5 * H - 15 * 60 - 1)
    assert guard.tick() == "running" and events == []
    clock.advance(1)
    assert guard.tick() == "warned"
    assert events == ["warn 900"]
    assert "budget 3 USD" in guard.snapshot()["warning"]
    clock.advance(9 * 60)
    assert guard.tick() == "warned" and events == ["warn 900"]  # warned once only
    clock.advance(60)  # 5 minutes left: the stop margin
    assert guard.tick() == "stopped"

    assert events == ["warn 900", "drain", "flush", "exit"]
    assert exits == [0] and guard.stop_result == {"drained": True, "flushed": True}
    # The running job finished and its image and infotext reached the store.
    assert queue.get(running.id).state == "done"
    stored = sorted(p.name for p in server["store"].rglob("*") if p.is_file())
    assert stored == [f"{running.id}.png", f"{running.id}.txt"]
    assert outbox.pending_count() == 0
    # The job that had not started is not lost: it stays queued in the journal for the next start.
    assert [j.id for j in queue.journal.unfinished()] == [queued.id]
    snap = guard.snapshot()
    assert snap["state"] == "stopped" and snap["stop_reason"] == "budget"
    assert snap["spend"] == pytest.approx(0.60 * (5 * H - 5 * 60) / H)
    assert snap["spend"] < 3.0


def test_a_job_that_cannot_finish_in_time_is_reported_not_hidden():
    clock = FakeClock()
    exits: list[int] = []
    guard = SessionGuard(
        CostMeter(1.0, clock=clock),
        max_hours=1,
        drain_jobs=lambda t: False,
        flush_outbox=lambda t: True,
        exit=exits.append,
    )
    clock.advance(H)
    guard.tick()
    assert guard.state == "stopped" and exits == [3]
    assert guard.stop_result == {"drained": False, "flushed": True}


def test_earliest_limit_wins_and_platform_limit_counts_from_boot(tmp_path):
    clock = FakeClock()
    colab = detect({"COLAB_GPU": "1"}, tmp_path)
    # The Colab VM booted 11.5 h ago: 30 min of its 12 h are left, earlier than --max-hours 2.
    left = platform_limit_s(colab, uptime=11.5 * H)
    assert left == pytest.approx(0.5 * H)
    warned: list[str] = []
    guard = SessionGuard(
        CostMeter(0.2, clock=clock),
        max_hours=2,
        budget=100,
        platform_limit_s=left,
        platform_name="Google Colab",
        on_warn=lambda m, s: warned.append(m),
    )
    assert [lim.reason for lim in guard.limits] == ["platform", "max_hours", "budget"]
    clock.advance(15 * 60)
    assert guard.tick() == "warned" and "Google Colab's session limit" in warned[0]
    clock.advance(10 * 60)
    assert guard.tick() == "stopped" and guard.stop_reason == "platform"
    assert platform_limit_s(detect({}, tmp_path), uptime=50 * H) is None  # a VM has no known limit


def test_budget_without_a_price_is_not_silently_ignored():
    guard = SessionGuard(CostMeter(None, clock=FakeClock()), budget=5)
    assert guard.limits == [] and "--price-per-hour" in guard.snapshot()["notes"][0]
    assert guard.tick() == "running"


def test_zero_price_never_divides_by_zero():
    guard = SessionGuard(CostMeter(0.0, clock=FakeClock()), budget=5)
    assert guard.limits == [] and guard.tick() == "running"


def test_run_loop_stops_a_session_already_past_its_limit():
    clock = FakeClock()
    exits: list[int] = []
    guard = SessionGuard(CostMeter(1.0, clock=clock), max_hours=0.01, exit=exits.append)
    clock.advance(H)
    guard.run(threading.Event(), poll_s=0.01)
    assert guard.state == "stopped" and exits == [0]


def test_price_from_the_catalog_for_the_detected_gpu(tmp_path):
    cat = load_price_catalog()
    price, label = catalog_price(cat, "runpod", "RTX 4090", "USD")
    assert price == pytest.approx(0.60)  # on-demand, not the cheaper preemptible spot price
    assert "--price-per-hour" in label
    price, _ = catalog_price(cat, "colab", "T4", "JPY")
    assert price == pytest.approx(10.72 * 1.96)  # Pro's yen rate per CU
    assert catalog_price(cat, "runpod", "T4", "USD") is None
    assert cat.gpu_for_device_name("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert cat.gpu_for_device_name("Tesla T4") == "T4"
    assert cat.gpu_for_device_name("NVIDIA GeForce RTX 4090") == "RTX 4090"
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/uptime").write_text("41400.25 80000.00\n")
    assert uptime_s(tmp_path) == pytest.approx(41400.25)


def test_session_guard_for_serve_prices_the_detected_gpu_and_platform(tmp_path):
    from sdcloud.cloud.session import session_guard_for
    from sdcloud.cloud.system import Gpu, SystemProbe
    from sdcloud.settings import Settings

    class OneGpu(SystemProbe):
        def __init__(self, name):
            super().__init__(tmp_path)
            self.name = name

        def gpus(self):
            return [Gpu(self.name, 24.0, "550")]

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/uptime").write_text(f"{11 * H} 0\n")
    settings = Settings(data_dir=tmp_path / "d", budget=6.0)
    guard = session_guard_for(
        settings, env={"RUNPOD_POD_ID": "p"}, root=tmp_path, probe=OneGpu("NVIDIA GeForce RTX 4090")
    )
    assert guard.meter.price_per_hour == pytest.approx(0.60) and "catalog" in guard.meter.price_source
    assert guard.next_limit.reason == "budget" and guard.next_limit.at_s == pytest.approx(10 * H)
    # An explicit price wins; on Colab the VM's 11 h of uptime leave 1 h of its 12.
    guard = session_guard_for(
        settings.replace(price_per_hour=0.2), env={"COLAB_GPU": "1"}, root=tmp_path, probe=OneGpu("Tesla T4")
    )
    assert guard.meter.price_source == "--price-per-hour"
    assert guard.next_limit.reason == "platform" and guard.seconds_left() == pytest.approx(H, abs=5)
    # No GPU, no price: spend is unknown and says how to fix it.
    guard = session_guard_for(
        Settings(data_dir=tmp_path / "d"), env={}, root=tmp_path, probe=OneGpu("Unknown Accelerator 9000")
    )
    assert guard.snapshot()["spend"] is None and "--price-per-hour" in guard.meter.price_source
