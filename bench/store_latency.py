"""Outbox latency and overhead (issue 4 targets).

    python bench/store_latency.py                   # both parts
    python bench/store_latency.py --skip-throughput # latency only (no torch)

1. **Latency**: time from "image done" (``Outbox.add`` returned: the PNG and its infotext are
   fsync'd and journaled) to "durable in the store" (the store confirmed the upload), for a
   folder store and an S3 store (moto's S3 server on 127.0.0.1, from the dev extra). Images
   are 400 kB (a 512x512 PNG) arriving every 0.2 s. Target: median <= 1 s.
2. **Throughput**: demo-model txt2img (64x64, 4 steps) images per second with the outbox off
   (save only) and on (save + ``add`` with the uploader running to a folder store), alternated
   over several rounds in this same process. Target: on/off >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sdcloud.settings import Settings
from sdcloud.storage.base import Store
from sdcloud.storage.local import LocalStore
from sdcloud.storage.outbox import Outbox


def measure_latency(store: Store, settings: Settings, n: int) -> tuple[list[float], list[float]]:
    """(seconds from add() returning to upload confirmed, seconds add() itself took)."""
    box = Outbox(settings, store, backoff=(0.2, 2.0))
    box.start()
    folder = settings.outputs_path / "txt2img-images" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(400_000)
    out: list[float] = []
    cost: list[float] = []
    for i in range(n):
        path = folder / f"{i:05d}-{i}.png"
        path.write_bytes(payload)
        t_add = time.perf_counter()
        box.add(path, f"bench {i}\nSteps: 4, Seed: {i}")
        t0 = time.perf_counter()
        cost.append(t0 - t_add)
        if not box.wait_idle(30):
            raise SystemExit(f"upload did not finish: {box.status()['last_error']}")
        out.append(time.perf_counter() - t0)
        time.sleep(0.2)
    box.close()
    return out, cost


def latency(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = Settings.load({"data_dir": str(root / "local")}, env={})
        s.ensure_dirs()
        store = LocalStore(root / "store")
        store.check()
        report("folder store", measure_latency(store, s, n))

        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            from sdcloud.storage.s3 import S3Store

            s3 = S3Store("bench", "sd", endpoint=f"http://{host}:{port}")
            s3.fs.mkdir("bench")
            s3.check()
            s2 = Settings.load({"data_dir": str(root / "s3")}, env={})
            s2.ensure_dirs()
            report("S3 (moto, loopback)", measure_latency(s3, s2, n))
        finally:
            server.stop()


def report(name: str, measured: tuple[list[float], list[float]]) -> None:
    values, cost = sorted(measured[0]), measured[1]
    med = statistics.median(values)
    p90 = values[int(0.9 * (len(values) - 1))]
    ok = "OK" if med <= 1.0 else "OVER TARGET"
    print(f"latency {name:22s} median {med * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms  "
          f"max {values[-1] * 1000:7.1f} ms  (target median <= 1000 ms: {ok}); "
          f"add() itself: median {statistics.median(cost) * 1000:.1f} ms")


def throughput(images: int, rounds: int) -> None:
    from sdcloud.engine.engine import Engine
    from sdcloud.engine.types import GenerationRequest
    from sdcloud.outputs import save_result

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = Settings.load({"data_dir": str(root / "data")}, env={})
        s.ensure_dirs()
        store = LocalStore(root / "store")
        store.check()
        engine = Engine(s)
        engine.load_model("demo")
        req = GenerationRequest(prompt="bench", width=64, height=64, steps=4, seed=1)
        engine.generate(req)  # warm-up

        def run(box: Outbox | None) -> float:
            t0 = time.perf_counter()
            for _ in range(images):
                for path in save_result(engine.generate(req), s, "txt2img"):
                    if box is not None:
                        box.add(path, path.with_suffix(".txt") if path.with_suffix(".txt").exists()
                                else "bench")
            return images / (time.perf_counter() - t0)

        box = Outbox(s, store)
        box.start()
        off, on = [], []
        for _ in range(rounds):
            off.append(run(None))
            on.append(run(box))
        box.stop(flush=True, timeout=60)
        box.close()
        r_off, r_on = statistics.median(off), statistics.median(on)
        ratio = r_on / r_off
        print(f"throughput outbox off {r_off:6.2f} img/s  on {r_on:6.2f} img/s  ratio {ratio:.3f} "
              f"(target >= 0.95: {'OK' if ratio >= 0.95 else 'UNDER TARGET'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=30, help="images per latency run / throughput round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating off/on throughput rounds")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    if not args.skip_latency:
        latency(args.images)
    if not args.skip_throughput:
        throughput(args.images, args.rounds)


if __name__ == "__main__":
    main()
