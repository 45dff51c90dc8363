"""Prometheus metrics, served at ``GET /metrics`` when ``SERVE_METRICS=true``.

Off by default: everything the container serves is public through ``/invoke/*``. HTTP metrics
(``yolo_http_*``: requests, duration, in progress, 5xx, by method, route template and status) are
Litestar's ``PrometheusMiddleware``; the ``yolo_*`` ones below are the server's own.
"""

from __future__ import annotations

import re

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import Counter, Gauge, Histogram

INFERENCE_SECONDS = Histogram(
    "yolo_inference_seconds", "Model time per request (one batched predict)", ["model", "route"]
)
IMAGES = Counter("yolo_images_total", "Images run through a model", ["model", "route"])
STREAM_FRAMES = Counter("yolo_stream_frames_total", "Frames run by /stream", ["model"])
STREAMS_ACTIVE = Gauge("yolo_streams_active", "Open /stream responses", ["model"])
ERRORS = Counter("yolo_errors_total", "Error responses by problem code", ["code"])
BATCH_SIZE = Histogram(
    "yolo_batch_size",
    "Images per predict call (several requests' when batching)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge(
    "yolo_queue_depth", "Requests and stream frames waiting for or in inference", ["model"]
)


class MetricsController(PrometheusController):
    """``GET /metrics``: the process's Prometheus registry, text format."""

    path = "/metrics"
    include_in_schema = False


def prometheus_config(health_route: str) -> PrometheusConfig:
    """HTTP metrics by route template (``/models/{name:str}``, not one series per model name);
    the health route (polled by Vertex) and ``/metrics`` itself are left out."""
    return PrometheusConfig(
        app_name="vertex-yolo",
        prefix="yolo_http",
        group_path=True,
        exclude=[f"^{re.escape(health_route)}$", "^/metrics$"],
    )
