"""Every GPU measurement in one run (under 8 minutes on an H100-class machine): a JSON report.

For a short loan of a GPU machine: it runs ``perf.py`` (P1-P5, the server against the best
in-process configuration) on the demo detector at 160 and YOLO11n at 640, in FP32 and FP16, P2
at concurrency 32, and, when TensorRT is installed, on a YOLO11n engine exported on the spot;
each run's report goes into one JSON file with the machine and the date. Nothing here is
needed by CI. Run::

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
COMMON = ["--device", "cuda", "--concurrency", "32", "--requests", "200", "--frames", "300"]
COMMON += ["--rounds", "2"]


def runs(tmp: Path) -> list[tuple[str, list[str]]]:
    plan = [
        ("demo-160-fp32", ["--model", str(DEMO)]),
        ("yolo11n-640-fp32", ["--model", "yolo11n.yaml", "--imgsz", "640"]),
        ("yolo11n-640-fp16", ["--model", "yolo11n.yaml", "--imgsz", "640", "--half"]),
        ("demo-160-fp16", ["--model", str(DEMO), "--half"]),
    ]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("[gpu] TensorRT is not installed: no engine run", file=sys.stderr)
        return plan
    engine = export_engine(tmp)
    if engine is not None:
        plan.insert(3, ("yolo11n-640-engine-fp16", ["--model", str(engine), "--imgsz", "640"]))
    return plan


def export_engine(tmp: Path) -> Path | None:
    """YOLO11n (random init, as perf.py's) exported to a TensorRT FP16 engine at 640."""
    code = (
        "import sys; from app.offline import configure_ultralytics; configure_ultralytics();"
        "from ultralytics import YOLO; m = YOLO('yolo11n.yaml');"
        f"m.save({str(tmp / 'yolo11n.pt')!r});"
        f"print(YOLO({str(tmp / 'yolo11n.pt')!r}).export(format='engine', half=True, imgsz=640,"
        " device=0))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"[gpu] engine export failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return Path(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-report.json")
    parser.add_argument("--budget", type=float, default=450, help="seconds; later runs skipped")
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
        "runs": {},
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="gpu-") as tmp:
        for name, extra in runs(Path(tmp)):
            if time.monotonic() - started > args.budget:
                report["skipped"].append(name)
                continue
            out = Path(tmp) / f"{name}.json"
            print(f"[gpu] {name}", file=sys.stderr, flush=True)
            done = subprocess.run(
                [sys.executable, str(PERF), *COMMON, *extra, "--json", str(out)],
                cwd=ROOT,
                text=True,
                capture_output=True,
            )
            print(done.stdout, flush=True)
            report["runs"][name] = (
                json.loads(out.read_text())
                if out.is_file()
                else {"error": done.stderr[-3000:], "exit": done.returncode}
            )
            Path(args.out).write_text(json.dumps(report, indent=2))  # what is done so far
    report["seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"[gpu] report: {args.out} ({report['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
