"""Every GPU measurement in one run, within a time budget (450 s by default): a JSON report.

For a short loan of a GPU machine: ``perf.py`` (P1-P5, the server against the best in-process
configuration) on YOLO11n at 640 and the demo detector at 160, FP16 and FP32, P2 at
concurrency 32, and, when TensorRT is installed and time is left, a YOLO11n engine exported on
the spot. Runs go in order of importance; each is given what is left of the budget (a run cut
short is recorded as such), and the report is rewritten after each, so whatever was measured
is kept. In-process torch threads are pinned to 1 (``--threads 1``: the server's policy on a
GPU), so the baseline does not search CPU thread counts. Nothing here is needed by CI. Run::

    .venv/bin/python tests/bench/gpu.py [--out gpu-report.json] [--budget 450]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT / "tests" / "bench" / "perf.py"
DEMO = ROOT / "app" / "demo" / "weights" / "shapes-detect.pt"
COMMON = ["--device", "cuda", "--threads", "1", "--concurrency", "32"]
COMMON += ["--requests", "200", "--frames", "300", "--rounds", "2"]
YOLO11N = ["--model", "yolo11n.yaml", "--imgsz", "640"]
PLAN = [  # most important first
    ("yolo11n-640-fp16", [*YOLO11N, "--half"]),
    ("yolo11n-640-fp32", YOLO11N),
    ("demo-160-fp16", ["--model", str(DEMO), "--half"]),
    ("yolo11n-640-engine-fp16", None),  # exported just before its run, if TensorRT is here
    ("demo-160-fp32", ["--model", str(DEMO)]),
]


def export_engine(tmp: Path, timeout: float) -> Path | None:
    """YOLO11n (random init, as perf.py's) exported to a TensorRT FP16 engine at 640."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("[gpu] TensorRT is not installed: no engine run", file=sys.stderr)
        return None
    weights = tmp / "yolo11n.pt"
    code = (
        "from app.offline import configure_ultralytics; configure_ultralytics();"
        "from ultralytics import YOLO; YOLO('yolo11n.yaml').save(" + repr(str(weights)) + ");"
        "print(YOLO(" + repr(str(weights)) + ").export(format='engine', half=True, imgsz=640, "
        "device=0))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        print("[gpu] the engine export ran out of time", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"[gpu] engine export failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-report.json", help="the JSON report (rewritten)")
    parser.add_argument("--budget", type=float, default=450, help="seconds for everything")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu.py: no CUDA device here", file=sys.stderr)
        return 2
    started = time.monotonic()
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "budget_s": args.budget,
        "runs": {},
        "skipped": [],
    }

    def left() -> float:
        return args.budget - (time.monotonic() - started)

    with tempfile.TemporaryDirectory(prefix="gpu-") as tmp:
        for name, extra in PLAN:
            if left() < 30:
                report["skipped"].append(name)
                continue
            if extra is None:
                engine = export_engine(Path(tmp), left())
                if engine is None:
                    report["skipped"].append(name)
                    continue
                extra = ["--model", str(engine), "--imgsz", "640"]
            out = Path(tmp) / f"{name}.json"
            print(f"[gpu] {name} ({left():.0f} s left)", file=sys.stderr, flush=True)
            command = [sys.executable, str(PERF), *COMMON, *extra, "--json", str(out)]
            try:
                done = subprocess.run(
                    command, cwd=ROOT, text=True, capture_output=True, timeout=left()
                )
                print(done.stdout, flush=True)
                report["runs"][name] = (
                    json.loads(out.read_text())
                    if out.is_file()
                    else {"error": done.stderr[-3000:], "exit": done.returncode}
                )
            except subprocess.TimeoutExpired:
                report["runs"][name] = {"error": "out of time (the budget ran out mid-run)"}
            report["seconds"] = round(time.monotonic() - started, 1)
            Path(args.out).write_text(json.dumps(report, indent=2))  # what is done so far
    report["seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"[gpu] report: {args.out} ({report['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
