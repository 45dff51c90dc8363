"""The peer a user would pick instead: the same model behind LitServe (benchmark only).

``bench_peers.py`` starts it; by hand::

    .venv/bin/python tests/bench/litserve_peer.py --model M --port 8000 --workers 2 --threads 1

``POST /predict`` with ``{"image": "<base64 JPEG>"}`` (LitServe reads JSON or form bodies; a
raw body is not among its request types) answers the detections as ``/detect`` does: class,
name, confidence, box in original pixels. Decoding is the server's own (``cv2.imdecode``, full
size: Ultralytics' ``predict(path)`` pixels), prediction Ultralytics' batched ``predict`` with the
server's default parameters. Its best configurations (as tuned on the project's machine):
``--batch 8 --batch-timeout-ms 5``, LitServe's fast queue (ZeroMQ), the torch threads of each
worker process searched (``--threads``).
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import cv2
import litserve as ls
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.offline import configure_ultralytics, disable_sync  # noqa: E402
from client.schema import DetectParameters  # noqa: E402


class YoloAPI(ls.LitAPI):
    def __init__(self, model: str, threads: int, imgsz: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights, self.threads, self.imgsz = model, threads, imgsz

    def setup(self, device: str) -> None:
        import torch
        from ultralytics import YOLO

        configure_ultralytics()
        disable_sync()
        self.model = YOLO(self.weights)
        p = DetectParameters()
        self.kwargs = dict(
            conf=p.conf, iou=p.iou, max_det=p.max_det, imgsz=self.imgsz, device="cpu",
            verbose=False,
        )  # fmt: skip
        self.model.predict(np.zeros((self.imgsz, self.imgsz, 3), np.uint8), **self.kwargs)
        torch.set_num_threads(self.threads)  # after the device set-up, which resets it

    def decode_request(self, request: dict) -> np.ndarray:
        data = np.frombuffer(base64.b64decode(request["image"]), np.uint8)
        return cv2.imdecode(data, cv2.IMREAD_COLOR)

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs

    def predict(self, images: list[np.ndarray]) -> list[Any]:
        return self.model.predict(images, **self.kwargs)

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    def encode_response(self, result: Any) -> dict:
        boxes = result.boxes
        names = result.names
        return {
            "detections": [
                {"class_id": int(c), "name": names[int(c)], "confidence": float(s), "box": b}
                for c, s, b in zip(
                    boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True
                )
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size")
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--no-fast-queue", action="store_true")
    args = parser.parse_args()
    api = YoloAPI(
        args.model, args.threads, args.imgsz,
        max_batch_size=args.batch, batch_timeout=args.batch_timeout_ms / 1000,
    )  # fmt: skip
    server = ls.LitServer(
        api, accelerator="cpu", workers_per_device=args.workers,
        fast_queue=not args.no_fast_queue, timeout=120,
    )  # fmt: skip
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
