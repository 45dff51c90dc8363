"""The model registry: resolve sources, load, warm up and describe every served model.

Loading happens in a worker thread started by the app's lifespan, so the server answers
``/health`` (503 ``loading``) from its first second and 200 once every model is warm.
Ultralytics' predictor keeps per-call state, so each model holds a small pool of instances
(``SERVE_WORKERS``), each used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np

from app.config import ModelSpec, Settings
from app.errors import InvalidParameter, NotReady, UnknownModel, WrongTask
from app.offline import disable_sync
from client.schema import ModelInfo, ModelList

log = logging.getLogger("app.registry")
T = TypeVar("T")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, path = uri[len("gs://") :].partition("/")
    return bucket, path


def _download_gs(uri: str, cache_dir: Path) -> Path:
    """Copy a gs:// object into the cache (Application Default Credentials)."""
    from google.cloud import storage  # imported only when a gs:// source is used

    bucket, path = _split_gs(uri)
    target = cache_dir / bucket / path
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".partial")
        storage.Client().bucket(bucket).blob(path).download_to_filename(str(partial))
        partial.rename(target)
    return target


def discover_storage_models(storage_uri: str) -> list[ModelSpec]:
    """Every ``*.pt`` directly under AIP_STORAGE_URI, named after its file stem."""
    if storage_uri.startswith("gs://"):
        from google.cloud import storage

        bucket, prefix = _split_gs(storage_uri.rstrip("/") + "/")
        names = [
            b.name[len(prefix) :]
            for b in storage.Client().list_blobs(bucket, prefix=prefix, delimiter="/")
        ]
    else:
        names = [p.name for p in Path(storage_uri).iterdir() if p.is_file()]
    specs = [
        ModelSpec(re.sub(r"[^A-Za-z0-9._-]", "-", Path(n).stem), n)
        for n in sorted(names)
        if n.endswith(".pt")
    ]
    if not specs:
        raise FileNotFoundError(f"no *.pt weights found under AIP_STORAGE_URI={storage_uri}")
    return specs


def resolve_source(
    source: str, storage_uri: str | None, cache_dir: Path
) -> tuple[str, Path | None]:
    """Where to load ``source`` from, and the file whose sha256 is the model's version.

    A gs:// URI or a file under AIP_STORAGE_URI is copied locally; an existing path is used as
    is; anything else is handed to Ultralytics (``yolo11n.pt`` is downloaded into the cache
    when online, ``yolo11n.yaml`` builds a randomly initialised model).
    """
    if source.startswith("gs://"):
        path = _download_gs(source, cache_dir)
        return str(path), path
    if Path(source).is_file():
        return source, Path(source)
    if storage_uri:
        if storage_uri.startswith("gs://"):
            path = _download_gs(f"{storage_uri.rstrip('/')}/{source}", cache_dir)
            return str(path), path
        candidate = Path(storage_uri) / source
        if candidate.is_file():
            return str(candidate), candidate
    if source.endswith(".pt") and "/" not in source:
        # Ultralytics downloads a bare name into the working directory, which a container's
        # unprivileged user may not be able to write; download it into the cache instead.
        cache_dir.mkdir(parents=True, exist_ok=True)
        return str(cache_dir / source), None
    return source, None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class LoadedModel:
    """A warm model: its description and a pool of Ultralytics instances."""

    def __init__(self, spec: ModelSpec, instances: list[Any], sha256: str, device: str) -> None:
        first = instances[0]
        self.name = spec.name
        self.source = spec.source
        self.task: str = first.task
        self.names: dict[int, str] = {int(k): str(v) for k, v in first.names.items()}
        imgsz = first.overrides.get("imgsz", 640)
        self.imgsz = int(max(imgsz) if isinstance(imgsz, list | tuple) else imgsz)
        self.sha256 = sha256
        self.version = sha256[:12]
        self.device = device
        self._instances = instances
        self._pool: asyncio.Queue[Any] | None = None

    def start(self) -> None:
        """Create the instance pool (needs the running event loop)."""
        self._pool = asyncio.Queue()
        for instance in self._instances:
            self._pool.put_nowait(instance)

    async def run(self, fn: Callable[[Any], T], limiter: anyio.CapacityLimiter) -> T:
        """Run ``fn(yolo_instance)`` in a worker thread, one caller per instance at a time.

        A thread cannot be interrupted, and asyncio's cancellation of the caller (a client gone
        from a stream) does not wait for it: the call runs in its own task, shielded, which puts
        the instance back only when the thread is done with it.
        """
        assert self._pool is not None, "model pool not started"
        pool = self._pool
        instance = await pool.get()

        async def call() -> T:
            try:
                return await anyio.to_thread.run_sync(fn, instance, limiter=limiter)
            finally:
                pool.put_nowait(instance)

        return await asyncio.shield(asyncio.ensure_future(call()))

    def class_ids(self, classes: list[int | str] | None) -> list[int] | None:
        """Class names or ids to ids; an unknown one is a 400 listing the model's classes."""
        if classes is None:
            return None
        by_name = {v: k for k, v in self.names.items()}
        ids = []
        for item in classes:
            text = str(item)
            if text.isdigit() and int(text) in self.names:
                ids.append(int(text))
            elif text in by_name:
                ids.append(by_name[text])
            else:
                allowed = [f"{k}:{v}" for k, v in self.names.items()]
                raise InvalidParameter(
                    f"classes: {text!r} is not a class of model {self.name!r}; "
                    f"its classes are {', '.join(allowed[:20])}{' ...' if len(allowed) > 20 else ''}",
                    field="classes",
                    allowed=list(self.names.values()),
                )
        return ids

    def info(self, default: bool) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            task=self.task,
            classes=self.names,
            imgsz=self.imgsz,
            source=self.source,
            version=self.version,
            sha256=self.sha256,
            device=self.device,
            default=default,
        )


class Registry:
    """Every served model, by name. Owned by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}
        self.state = "loading"
        self.error: str | None = None
        self.default_name = settings.default_model
        self.limiter: anyio.CapacityLimiter | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def expected(self) -> list[str]:
        return [m.name for m in self.settings.models] or list(self.models)

    async def load(self) -> None:
        """Load and warm every model; on failure record the error and re-raise."""
        self.limiter = anyio.CapacityLimiter(self.settings.workers)
        try:
            loaded = await anyio.to_thread.run_sync(self._load_all, abandon_on_cancel=True)
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        for model in loaded:
            model.start()
            self.models[model.name] = model
        if self.default_name is None and loaded:
            self.default_name = loaded[0].name
        self.state = "ready"

    def _load_all(self) -> list[LoadedModel]:
        settings = self.settings
        specs = list(settings.models)
        if not specs and settings.storage_uri:
            specs = discover_storage_models(settings.storage_uri)
        device = resolve_device(settings.device)
        disable_sync()
        loaded = [self._load_one(spec, device) for spec in specs]
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)  # after the first predict, so it sticks
        return loaded

    def _load_one(self, spec: ModelSpec, device: str) -> LoadedModel:
        from ultralytics import YOLO

        started = time.perf_counter()
        settings = self.settings
        where, weights = resolve_source(spec.source, settings.storage_uri, settings.cache_dir)
        instances = []
        for _ in range(settings.workers):
            model = YOLO(where)
            imgsz = model.overrides.get("imgsz", 640)
            imgsz = int(max(imgsz) if isinstance(imgsz, list | tuple) else imgsz)
            model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), device=device, verbose=False)
            instances.append(model)
        if weights is None:
            ckpt = getattr(instances[0], "ckpt_path", None)
            weights = Path(ckpt) if ckpt and Path(ckpt).is_file() else None
        sha = sha256_file(weights) if weights else hashlib.sha256(where.encode()).hexdigest()
        model = LoadedModel(spec, instances, sha, device)
        log.info(
            "model %s ready: task=%s classes=%d imgsz=%d device=%s version=%s (%.1f s)",
            model.name, model.task, len(model.names), model.imgsz, device, model.version,
            time.perf_counter() - started,
        )  # fmt: skip
        return model

    def ensure_ready(self) -> None:
        """Raise :class:`NotReady` (503) unless every model is loaded and warm."""
        if not self.ready:
            detail = (
                f"model loading failed: {self.error}"
                if self.state == "failed"
                else "models are still loading; retry shortly (GET /health says when ready)"
            )
            raise NotReady(detail)

    def get(self, name: str | None, task: str | None = None, route: str = "") -> LoadedModel:
        """The model to use: by name, else the default (for ``task``, the first of that task)."""
        self.ensure_ready()
        if name is None:
            default = self.models.get(self.default_name or "")
            if task is None or (default and default.task == task):
                name = self.default_name
            else:
                name = next((m.name for m in self.models.values() if m.task == task), None)
                if name is None:
                    raise WrongTask(
                        f"{route} needs a {task} model and none is loaded "
                        f"(models: {self._listing()})"
                    )
        model = self.models.get(name or "")
        if model is None:
            raise UnknownModel(
                f"no model named {name!r}; available: {self._listing()}",
                field="model",
                allowed=list(self.models),
            )
        if task is not None and model.task != task:
            raise WrongTask(
                f"model {model.name!r} is a {model.task} model; {route} needs a {task} model "
                f"(models: {self._listing()})",
                field="model",
                allowed=[m.name for m in self.models.values() if m.task == task],
            )
        return model

    def _listing(self) -> str:
        return ", ".join(f"{m.name} ({m.task})" for m in self.models.values()) or "none"

    def describe(self) -> ModelList:
        return ModelList(
            models=[m.info(m.name == self.default_name) for m in self.models.values()],
            default_model=self.default_name,
            deployed_model_id=self.settings.deployed_model_id,
        )
