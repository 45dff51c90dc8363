"""Benchmark: ``python -m client batch`` against ``python -m client bench`` at the same
concurrency (what the batch machinery itself costs: listing, reading, a line per image, the
resumable output), through the emulator with 1 and 2 replicas.

A GCS API server (``gcp-storage-emulator``) holds ``--images`` generated 320x320 PNG scenes; the
same files sit in a local folder. For each replica count, a fresh emulator (the demo detector),
then, each at concurrency ``--concurrency`` through the SDK (``Endpoint.invoke``):

* ``bench --sdk``: the local files, one per request, ``--requests`` as many as images;
* ``batch`` from the local folder to a local JSONL;
* ``batch`` from ``gs://`` to ``gs://`` (bytes read by the client; then ``--send uri``, the
  server reads them).

A benchmark, not a test: it prints figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_batch.py [--images 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from client.emulator import Emulator  # noqa: E402
from helpers import encode, scenes  # noqa: E402
from servers import start_storage  # noqa: E402


def client(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "client", *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"python -m client {' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    c = str(args.concurrency)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gcs = start_storage(tmp / "gcs.log")
        os.environ.update(gcs.env)
        try:
            from google.cloud import storage

            bucket = storage.Client().create_bucket("inputs")
            storage.Client().create_bucket("outputs")
            folder = tmp / "images"
            folder.mkdir()
            for i, (rgb, _) in enumerate(scenes(args.images, seed=3, sizes=((320, 320),))):
                data = encode(rgb)
                (folder / f"{i:05d}.png").write_bytes(data)
                bucket.blob(f"b/{i:05d}.png").upload_from_string(data, "image/png")
            files = sorted(str(p) for p in folder.iterdir())
            print(f"{os.cpu_count()} cores; {args.images} PNG scenes of 320x320; concurrency {c}")
            print(f"{'':>10} {'bench':>8} {'local':>8} {'gs bytes':>9} {'gs uri':>8}  images/s")
            for replicas in (1, 2):
                with Emulator(
                    args=[
                        *("--deploy", "shapes-a=100", "--replicas", f"shapes-a={replicas}"),
                        *("--env", "shapes-a:SERVE_ALLOWED_BUCKETS=inputs"),
                    ],
                    env={"YOLO_CONFIG_DIR": str(tmp / "yolo"), "SERVE_LOG_LEVEL": "warning"},
                    workdir=tmp / f"emulator-{replicas}",
                    startup_timeout=300,
                ):
                    where = ["--emulator-info", str(tmp / f"emulator-{replicas}" / "info.json")]
                    report = client(
                        "bench", *files, *where, "--sdk", "--concurrency", c,
                        "--requests", str(args.images), "--json",
                    )  # fmt: skip
                    bench = json.loads(report)["levels"][0]["throughput"]
                    rates = []
                    for source, out, extra in (
                        (str(folder), str(tmp / f"local-{replicas}.jsonl"), []),
                        ("gs://inputs/b/", f"gs://outputs/bytes-{replicas}.jsonl", []),
                        ("gs://inputs/b/", f"gs://outputs/uri-{replicas}.jsonl", ["--send", "uri"]),
                    ):
                        printed = client(
                            "batch", source, "--out", out, *where, "--concurrency", c, "-q",
                            "--json", *extra,
                        )  # fmt: skip
                        rates.append(json.loads(printed)["stats"]["images_per_s"])
                    print(f"{replicas:>2} replica  {bench:>8.1f} {rates[0]:>8.1f} "
                          f"{rates[1]:>9.1f} {rates[2]:>8.1f}")  # fmt: skip
        finally:
            gcs.stop()


if __name__ == "__main__":
    main()
