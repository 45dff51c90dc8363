"""Server settings, read from the environment (and ``python -m app`` flags) and validated once.

Vertex sets the ``AIP_*`` variables; the ``SERVE_*`` ones are this project's. A bad value raises
:class:`SettingsError` naming every problem, and ``python -m app`` exits with status 2.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DEMO_WEIGHTS = Path(__file__).parent / "demo" / "weights"
# One demo model per Ultralytics task (app/demo/weights/MODEL_CARD.md), the detector first: the
# default model of the routes that take any model.
DEMO_MODELS = tuple(
    (name, str(DEMO_WEIGHTS / f"{name}.pt"))
    for name in ("shapes-detect", "shapes-segment", "shapes-classify", "shapes-pose", "shapes-obb")
)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# PyTorch weights, model configs, and exports (ONNX files, OpenVINO directories, TensorRT
# engines)
WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx", ".engine", "_openvino_model")
DIRECTORY_SUFFIXES = ("_openvino_model",)
MB = 1024 * 1024
N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists them all."""


@dataclass(frozen=True)
class ModelSpec:
    """A model to serve: its public name and where its weights come from."""

    name: str
    source: str


@dataclass(frozen=True)
class Settings:
    """Everything the server is configured with. Build it with :meth:`from_env`."""

    host: str = "0.0.0.0"
    port: int = 8080
    health_route: str = "/health"
    storage_uri: str | None = None
    deployed_model_id: str = "local"
    replica_id: str = "local"  # this process: host name and pid (from_env); on Vertex, the pod
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)
    default_model: str | None = None
    max_body_bytes: int = 10 * MB
    max_pixels: int = 50_000_000  # 48 and 50 MP phone photos; see README
    max_images: int = 16
    jpeg_draft: bool = False  # opt-in: changes the pixels the model sees
    processes: int = 0  # 0: the server's policy (app/processes.py: one per core, up to 4, on CPU)
    workers: int = 0  # 0: the server's policy (app/threads.py: per process; see processes)
    torch_threads: int = 0  # 0: the server's policy (app/threads.py)
    device: str = "auto"
    log_level: str = "info"
    log_format: str = "json"
    metrics: bool = False
    openapi: bool = True
    shutdown_seconds: float = 25.0
    cache_dir: Path = Path("/tmp/vertex-yolo/models")
    tmp_dir: Path | None = None  # None: the system's temp dir
    stream_max_frames: int = 10_000
    stream_max_seconds: float = 600.0
    stream_max_pixels: int = 3840 * 2160
    stream_ping_seconds: float = 15.0
    stream_send_timeout: float = 30.0
    stream_queue: int = 4
    batching: str = "auto"  # auto: on for PyTorch weights, off for static exports
    half: str = "auto"  # FP16: auto is on for PyTorch weights on a CUDA device
    batch_max_size: int = 8
    batch_max_delay_ms: float = 5.0
    queue_size: int = 64
    allowed_buckets: frozenset[str] = frozenset()  # gs:// inputs: only these buckets
    max_object_bytes: int = 2 * 1024 * MB  # a gs:// video (images: max_body_bytes)
    model_sha256: Mapping[str, str] = field(default_factory=dict)  # name -> pinned sha256

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; raise :class:`SettingsError` listing every bad value."""
        env = os.environ if env is None else env
        errors: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        def ranged(name: str, default: N, low: N, high: N, kind: type[N], noun: str) -> N:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                errors.append(f"{name}={raw!r} is not {noun}")
                return default
            if not low <= value <= high:
                errors.append(f"{name}={value:g} is out of range [{low:g}, {high:g}]")
            return value

        def integer(name: str, default: int, low: int, high: int) -> int:
            return ranged(name, default, low, high, int, "an integer")

        def number(name: str, default: float, low: float, high: float) -> float:
            return ranged(name, default, low, high, float, "a number")

        def boolean(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            errors.append(f"{name}={raw!r} is not a boolean (true/false)")
            return default

        health = get("AIP_HEALTH_ROUTE") or "/health"
        # Vertex's default is /v1/endpoints/ENDPOINT/deployedModels/DEPLOYED_MODEL:predict
        if not re.fullmatch(r"/[A-Za-z0-9._~/:@-]*", health) or health == "/" or "//" in health:
            errors.append(f"AIP_HEALTH_ROUTE={health!r} must be a path such as /health")

        storage = get("AIP_STORAGE_URI")
        if storage and not storage.startswith("gs://") and not Path(storage).is_dir():
            errors.append(f"AIP_STORAGE_URI={storage!r} is neither a gs:// URI nor a directory")

        models = _parse_models(get("SERVE_MODELS"), storage, errors)
        default = get("SERVE_DEFAULT_MODEL")
        names = [m.name for m in models]
        if default and models and default not in names:
            errors.append(f"SERVE_DEFAULT_MODEL={default!r} is not one of {names}")

        device = get("SERVE_DEVICE") or "auto"
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?|\d+", device):
            errors.append(f"SERVE_DEVICE={device!r} must be auto, cpu, mps, cuda or cuda:N")

        log_level = (get("SERVE_LOG_LEVEL") or "info").lower()
        if log_level not in ("critical", "error", "warning", "info", "debug"):
            errors.append(f"SERVE_LOG_LEVEL={log_level!r} must be one of debug/info/warning/error")

        batching = (get("SERVE_BATCHING") or "auto").lower()
        if batching not in ("auto", "on", "off"):
            errors.append(f"SERVE_BATCHING={batching!r} must be auto, on or off")
        half = (get("SERVE_HALF") or "auto").lower()
        if half not in ("auto", "on", "off"):
            errors.append(f"SERVE_HALF={half!r} must be auto, on or off")
        elif half == "on" and device in ("cpu", "mps"):
            errors.append(f"SERVE_HALF=on needs a CUDA device (FP16); SERVE_DEVICE is {device}")

        log_format = (get("SERVE_LOG_FORMAT") or "json").lower()
        if log_format not in ("json", "text"):
            errors.append(f"SERVE_LOG_FORMAT={log_format!r} must be json or text")

        buckets = frozenset(
            b.strip() for b in (get("SERVE_ALLOWED_BUCKETS") or "").split(",") if b.strip()
        )
        for bucket in sorted(buckets):
            if not BUCKET_NAME.fullmatch(bucket):
                errors.append(
                    f"SERVE_ALLOWED_BUCKETS entry {bucket!r} is not a bucket name (3-222 of "
                    "a-z 0-9 . _ -, no gs:// prefix)"
                )

        tmp_dir = get("SERVE_TMP_DIR")
        if tmp_dir and not Path(tmp_dir).is_dir():
            errors.append(f"SERVE_TMP_DIR={tmp_dir!r} is not a directory")

        settings = cls(
            host=get("SERVE_HOST") or "0.0.0.0",
            port=integer("AIP_HTTP_PORT", 8080, 1, 65535),
            health_route=health,
            storage_uri=storage,
            deployed_model_id=get("AIP_DEPLOYED_MODEL_ID") or "local",
            replica_id=f"{socket.gethostname()}-{os.getpid()}",
            models=models,
            default_model=default or (names[0] if names else None),
            max_body_bytes=integer("SERVE_MAX_BODY_BYTES", 10 * MB, 1024, 1024 * MB),
            max_pixels=integer("SERVE_MAX_PIXELS", 50_000_000, 1024, 500_000_000),
            max_images=integer("SERVE_MAX_IMAGES", 16, 1, 256),
            jpeg_draft=boolean("SERVE_JPEG_DRAFT", False),
            processes=integer("SERVE_PROCESSES", 0, 0, 64),
            workers=integer("SERVE_WORKERS", 0, 0, 64),
            torch_threads=integer("SERVE_TORCH_THREADS", 0, 0, 256),
            device=device,
            log_level=log_level,
            log_format=log_format,
            metrics=boolean("SERVE_METRICS", False),
            openapi=boolean("SERVE_OPENAPI", True),
            shutdown_seconds=number("SERVE_SHUTDOWN_SECONDS", 25.0, 0.0, 3600.0),
            cache_dir=Path(get("SERVE_CACHE_DIR") or "/tmp/vertex-yolo/models"),
            tmp_dir=Path(tmp_dir) if tmp_dir else None,
            stream_max_frames=integer("SERVE_STREAM_MAX_FRAMES", 10_000, 1, 10_000_000),
            stream_max_seconds=number("SERVE_STREAM_MAX_SECONDS", 600.0, 0.1, 86_400.0),
            stream_max_pixels=integer("SERVE_STREAM_MAX_PIXELS", 3840 * 2160, 1024, 100_000_000),
            stream_ping_seconds=number("SERVE_STREAM_PING_SECONDS", 15.0, 0.1, 3600.0),
            stream_send_timeout=number("SERVE_STREAM_SEND_TIMEOUT", 30.0, 0.1, 3600.0),
            stream_queue=integer("SERVE_STREAM_QUEUE", 4, 1, 1024),
            batching=batching,
            half=half,
            batch_max_size=integer("SERVE_BATCH_MAX_SIZE", 8, 1, 256),
            batch_max_delay_ms=number("SERVE_BATCH_MAX_DELAY_MS", 5.0, 0.0, 1000.0),
            queue_size=integer("SERVE_QUEUE_SIZE", 64, 1, 100_000),
            allowed_buckets=buckets,
            max_object_bytes=integer("SERVE_MAX_OBJECT_BYTES", 2 * 1024 * MB, 1024, 1 << 40),
            model_sha256=_parse_pins(get("SERVE_MODEL_SHA256"), models, errors),
        )
        if settings.processes > 1 and settings.metrics:
            errors.append(
                f"SERVE_METRICS=true needs one server process (SERVE_PROCESSES is "
                f"{settings.processes}): each process would count only its own requests"
            )
        if errors:
            raise SettingsError("invalid configuration:\n  - " + "\n  - ".join(errors))
        return settings


def _parse_models(raw: str | None, storage: str | None, errors: list[str]) -> tuple[ModelSpec, ...]:
    """``SERVE_MODELS="name=source,name2=source2"``; unset: the storage URI's weights or the demo.

    With ``AIP_STORAGE_URI`` set and no ``SERVE_MODELS``, the registry lists the weights found
    there when it loads (an empty tuple here means exactly that).
    """
    if raw is None:
        if storage:
            return ()
        missing = [s for _, s in DEMO_MODELS if not Path(s).is_file()]
        if missing:
            errors.append(f"the bundled demo weights are missing: {missing} (set SERVE_MODELS)")
        return tuple(ModelSpec(n, s) for n, s in DEMO_MODELS)
    specs: list[ModelSpec] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, source = item.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not source:
            errors.append(f"SERVE_MODELS entry {item!r} must look like name=source")
            continue
        if not MODEL_NAME.fullmatch(name):
            errors.append(f"SERVE_MODELS name {name!r} must match {MODEL_NAME.pattern}")
        if any(spec.name == name for spec in specs):
            errors.append(f"SERVE_MODELS names {name!r} twice")
        if source.rstrip("/").endswith(DIRECTORY_SUFFIXES):
            source = source.rstrip("/")
        if not source.endswith(WEIGHT_SUFFIXES):
            errors.append(f"SERVE_MODELS source {source!r} must end with one of {WEIGHT_SUFFIXES}")
        is_path = "/" in source and not source.startswith("gs://")
        is_dir = source.endswith(DIRECTORY_SUFFIXES)
        if is_path and not (Path(source).is_dir() if is_dir else Path(source).is_file()):
            kind = "directory" if is_dir else "file"
            errors.append(f"SERVE_MODELS source {source!r} is not a {kind}")
        specs.append(ModelSpec(name, source))
    if not specs:
        errors.append("SERVE_MODELS names no model")
    return tuple(specs)


def _parse_pins(
    raw: str | None, models: tuple[ModelSpec, ...], errors: list[str]
) -> dict[str, str]:
    """``SERVE_MODEL_SHA256="name=<sha256>,name2=<sha256>"``: each named model's weights must
    have that sha256 (a file's; an OpenVINO folder's is that of its listing, as /models shows),
    or the server refuses to start. A name must be one SERVE_MODELS serves, or, when models are
    discovered under AIP_STORAGE_URI, one found there (checked when they load)."""
    pins: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        name, sep, digest = (s.strip() for s in item.partition("="))
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            errors.append(f"SERVE_MODEL_SHA256 entry {item!r} must look like name=<64 hex digits>")
            continue
        if models and name not in {m.name for m in models}:
            errors.append(f"SERVE_MODEL_SHA256 pins {name!r}, which SERVE_MODELS does not serve")
        pins[name] = digest.lower()
    return pins
