"""Prometheus metrics, served at ``GET /metrics`` when ``SERVE_METRICS=true``.

Off by default: everything the container serves is public through ``/invoke/*``. HTTP metrics
(``yolo_http_*``: requests, duration, in progress, 5xx, by method, route template and status) are
Litestar's ``PrometheusMiddleware``; the ``yolo_*`` ones below are the server's own.
"""

from __future__ import annotations

import re
import threading
from collections import Counter as Tally
from collections.abc import Iterator

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
INFERENCE_WAITING = Gauge(
    "yolo_inference_waiting",
    "Work items (requests' images, stream frames) submitted to predict and not yet running",
    ["model"],
)


# Every Python thread of the server belongs to one of these pools, by name; anything else is a
# thread nobody accounted for (a leak, or a library starting threads of its own).
THREAD_POOLS = (
    ("main", re.compile(r"MainThread$")),
    ("inference", re.compile(r"infer-")),  # SERVE_WORKERS, shared by the models (app/threads.py)
    ("worker", re.compile(r"AnyIO worker thread$")),  # decode, encode, video reads: anyio's pool
)


def thread_pool(name: str) -> str:
    """The pool a thread belongs to (see :data:`THREAD_POOLS`), ``other`` if none."""
    return next((pool for pool, pattern in THREAD_POOLS if pattern.match(name)), "other")


class ThreadsCollector(Collector):
    """``yolo_threads{pool}``: the process's Python threads by pool, counted at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = Tally(thread_pool(t.name) for t in threading.enumerate())
        family = GaugeMetricFamily(
            "yolo_threads",
            "Python threads of the server by pool (other: unaccounted)",
            labels=["pool"],
        )
        for pool in [p for p, _ in THREAD_POOLS] + ["other"]:
            family.add_metric([pool], counts.get(pool, 0))
        yield family


REGISTRY.register(ThreadsCollector())


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
