"""Prometheus metrics, served at ``GET /metrics`` when ``SERVE_METRICS=true``.

Off by default: everything the container serves is public through ``/invoke/*``.
"""

from __future__ import annotations

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

INFERENCE_SECONDS = Histogram(
    "yolo_inference_seconds", "Model time per request (one batched predict)", ["model", "route"]
)
IMAGES = Counter("yolo_images_total", "Images run through a model", ["model", "route"])
STREAM_FRAMES = Counter("yolo_stream_frames_total", "Frames run by /stream", ["model"])
STREAMS_ACTIVE = Gauge("yolo_streams_active", "Open /stream responses", ["model"])
ERRORS = Counter("yolo_errors_total", "Error responses by problem code", ["code"])


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_handler() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
