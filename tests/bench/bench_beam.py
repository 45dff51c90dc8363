"""Benchmark: ``python -m client batch --runner DirectRunner`` (Beam, ``client.beam``) beside the
local ``batch`` engine and ``bench --sdk`` on the same inputs, through the emulator (the demo
detector on ``--replicas`` replicas, the SDK's ``Endpoint.invoke``).

``--images`` generated 320x320 PNG scenes in a local folder and in a GCS API server
(``gcp-storage-emulator``). Each round runs, one after the other (interleaved, so a machine
shared with other work slows each alike):

* ``bench --sdk``: the local files, one per request, at ``--concurrency``;
* ``batch`` (the local engine), the folder to a local JSONL, at ``--concurrency``;
* ``batch --runner DirectRunner``, the folder to local shards, ``--concurrency`` worker threads
  (requests of up to 16 images);
* the same from ``gs://`` with ``--send uri`` (the server reads each object).

Beam's figure is lines over the whole run, the pipeline's start-up included (what a user waits
for). A benchmark, not a test: it prints figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_beam.py [--images 300] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from client.emulator import Emulator  # noqa: E402
from helpers import encode, scenes  # noqa: E402
from servers import start_storage  # noqa: E402


def client(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "client", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"python -m client {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    c = str(args.concurrency)
    os.environ["NO_GCE_CHECK"] = "true"  # no credential probe of a metadata server

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gcs = start_storage(tmp / "gcs.log")
        os.environ.update(gcs.env)
        try:
            from google.cloud import storage

            bucket = storage.Client().create_bucket("inputs")
            folder = tmp / "images"
            folder.mkdir()
            for i, (rgb, _) in enumerate(scenes(args.images, seed=3, sizes=((320, 320),))):
                data = encode(rgb)
                (folder / f"{i:05d}.png").write_bytes(data)
                bucket.blob(f"b/{i:05d}.png").upload_from_string(data, "image/png")
            files = sorted(str(p) for p in folder.iterdir())
            with Emulator(
                args=[
                    *("--deploy", "shapes-a=100", "--replicas", f"shapes-a={args.replicas}"),
                    *("--env", "shapes-a:SERVE_ALLOWED_BUCKETS=inputs"),
                ],
                env={"YOLO_CONFIG_DIR": str(tmp / "yolo"), "SERVE_LOG_LEVEL": "warning"},
                workdir=tmp / "emulator",
                startup_timeout=300,
            ):
                where = ["--emulator-info", str(tmp / "emulator" / "info.json")]
                figures: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    runs = {
                        "bench --sdk": lambda: client(
                            "bench", *files, *where, "--sdk", "--concurrency", c,
                            "--requests", str(args.images),
                        )["levels"][0]["throughput"],
                        "batch (local engine)": lambda r=r: client(
                            "batch", str(folder), "--out", str(tmp / f"local-{r}.jsonl"),
                            *where, "--concurrency", c, "-q",
                        )["stats"]["images_per_s"],
                        "batch --runner DirectRunner": lambda r=r: client(
                            "batch", str(folder), "--out", str(tmp / f"beam-{r}.jsonl"),
                            *where, "--concurrency", c, "--runner", "DirectRunner",
                        )["stats"]["images_per_s"],
                        "batch --runner DirectRunner, gs:// --send uri": lambda r=r: client(
                            "batch", "gs://inputs/b/", "--out", str(tmp / f"beam-gs-{r}.jsonl"),
                            *where, "--concurrency", c, "--runner", "DirectRunner",
                            "--send", "uri",
                        )["stats"]["images_per_s"],
                    }  # fmt: skip
                    for name, run in runs.items():
                        figures.setdefault(name, []).append(run())
                        print(f"round {r + 1}: {name}: {figures[name][-1]:.1f} images/s")
                print(
                    f"\n{os.cpu_count()} cores; {args.images} PNG scenes of 320x320; "
                    f"{args.replicas} replicas; concurrency {c}; median of {args.rounds} rounds"
                )
                for name, values in figures.items():
                    print(f"{name:<48} {statistics.median(values):>7.1f} images/s  {values}")
        finally:
            gcs.stop()


if __name__ == "__main__":
    main()
