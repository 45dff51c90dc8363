"""The model registry: load, warm up, describe and look up every served model.

Loading happens in a worker thread started by the app's lifespan, so the server answers
``/health`` (503 ``loading``) from its first second and 200 once every model is warm. Where the
weights come from is :mod:`app.model_sources`; how a model's requests are queued, batched and
run is its :class:`~app.scheduler.Scheduler`. Ultralytics' predictor keeps per-call state, so
each model holds a small pool of instances, each used by one thread at a time: one is loaded and
warmed before ``/health`` is 200, more on demand (when a model has more requests in flight than
instances) up to the number of inference threads (``SERVE_WORKERS``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from app import siblings
from app.config import ModelSpec, Settings
from app.errors import InvalidParameter, NotReady, UnknownModel, WrongTask
from app.model_sources import (
    check_pin,
    check_pins_name_models,
    check_runtime,
    discover_storage_models,
    load_error_code,
    model_format,
    public_source,
    resolve_device,
    resolve_source,
    sha256_path,
)
from app.offline import disable_sync
from app.scheduler import Policy, Scheduler
from app.threads import InferenceThreads, hold_ultralytics_threads, is_cuda, policy
from client.schema import KeypointLayout, ModelInfo, ModelList, ModelParameters

log = logging.getLogger("app.registry")


def keypoint_layout(yolo: Any) -> KeypointLayout | None:
    """A pose model's keypoints: shape, names and skeleton, from what the model carries.

    The shape and names come from Ultralytics' backend (its checkpoint or an export's
    metadata; names per class, used when every class shares them); the skeleton from the
    model's architecture file (a ``skeleton`` key of pairs of keypoint indexes, as the demo
    pose model's has), else COCO's for a 17-keypoint model.
    """
    if yolo.task != "pose":
        return None
    backend = yolo.predictor.model
    shape = [int(v) for v in backend.kpt_shape]
    names = None
    # an export's metadata (on the backend), or the checkpoint's model (PyTorch weights)
    per_class = getattr(backend, "kpt_names", None) or getattr(yolo.model, "kpt_names", None) or {}
    listed = {tuple(str(n) for n in v) for v in per_class.values()}
    if len(listed) == 1:
        names = list(listed.pop())
    architecture = getattr(yolo.model, "yaml", None)
    skeleton = architecture.get("skeleton") if isinstance(architecture, dict) else None
    if skeleton is None and shape[0] == 17:
        from ultralytics.utils.plotting import Annotator

        skeleton = [[a - 1, b - 1] for a, b in Annotator.skeleton]  # Ultralytics counts from 1
    return KeypointLayout(
        shape=shape, names=names, skeleton=[[int(a), int(b)] for a, b in skeleton or []] or None
    )


class LoadedModel:
    """A warm model: its description, a pool of Ultralytics instances and their scheduler."""

    def __init__(
        self,
        spec: ModelSpec,
        instances: list[Any],
        sha256: str,
        device: str,
        half: bool = False,
        make: Callable[[], Any] | None = None,
    ) -> None:
        first = instances[0]
        self.name = spec.name
        self.source = spec.source
        self.task: str = first.task
        self.names: dict[int, str] = {int(k): str(v) for k, v in first.names.items()}
        imgsz = first.overrides.get("imgsz", 640)
        self.imgsz = int(max(imgsz) if isinstance(imgsz, list | tuple) else imgsz)
        backend = first.predictor.model  # Ultralytics' AutoBackend, set up by the warm-up predict
        self.format: str = backend.format  # pt, onnx, openvino
        # A static export runs at its export size only (Ultralytics ignores any other imgsz).
        self.fixed_imgsz = self.format != "pt" and not getattr(backend, "dynamic", False)
        self.sha256 = sha256
        self.version = sha256[:12]
        self.device, self.half = device, half
        self.keypoints = keypoint_layout(first)
        self._instances = instances
        self._make = make  # another warm instance (run on an inference thread)
        self.scheduler: Scheduler | None = None

    def start(self, settings: Settings, threads: InferenceThreads) -> None:
        """Start the model's scheduler (needs the running event loop; see app/scheduler.py)."""
        policy = Policy.from_settings(settings, self.format)
        self.scheduler = Scheduler(
            self.name, self._instances, policy, threads, make=self._make, most=threads.count
        )
        self.scheduler.start()
        log.info("model %s: %s", self.name, policy.describe())

    def admit(self, force: bool = False) -> AbstractContextManager[None]:
        """Hold a place in the model's queue for a block; 429 ``overloaded`` when it is full.

        ``force``: never refused (a frame of a stream admitted at its start).
        """
        assert self.scheduler is not None, "model not started"
        return self.scheduler.admit(force)

    def predict_args(self, params: ModelParameters, class_ids: list[int] | None) -> dict[str, Any]:
        """The arguments of Ultralytics' ``predict`` a request's parameters make for this model:
        a classification model takes only the input size (its answer is every class's
        probability; ``top_k`` picks from it), the others the box filters too."""
        args: dict[str, Any] = {"imgsz": params.imgsz or self.imgsz}
        if self.task != "classify":
            args.update(
                conf=getattr(params, "conf", 0.25),
                iou=getattr(params, "iou", 0.7),
                max_det=getattr(params, "max_det", 300),
                classes=class_ids,
            )
        return args

    async def predict(
        self, images: list[np.ndarray], params: ModelParameters, class_ids: list[int] | None
    ) -> list[Any]:
        """One predict over BGR images, maybe batched with other requests'; Results in order."""
        assert self.scheduler is not None, "model not started"
        args = self.predict_args(params, class_ids)
        # Only arguments that are equal can share a predict call. Ultralytics pads an image to
        # its own rectangle when all images of a call have one size, and to a square otherwise,
        # so one-size items batch only with the same size: batching never changes results.
        shapes = {image.shape for image in images}
        key = (
            *((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(args.items())),
            shapes.pop() if len(shapes) == 1 else "mixed",
        )

        def fn(yolo: Any, batch: list[np.ndarray]) -> list[Any]:
            return yolo.predict(batch, **args, device=self.device, half=self.half, verbose=False)

        return await self.scheduler.predict(images, key, fn)

    def input_size(self, imgsz: int | None) -> int:
        """The input size for a request's ``imgsz``: a static export refuses another (400)."""
        if imgsz is None:
            return self.imgsz
        if self.fixed_imgsz and imgsz != self.imgsz:
            raise InvalidParameter(
                f"imgsz: model {self.name!r} is a {self.format} export with a fixed input size "
                f"of {self.imgsz}; leave imgsz out or send {self.imgsz}",
                field="imgsz",
                allowed=[str(self.imgsz)],
            )
        return imgsz

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
            source=public_source(self.source),
            version=self.version,
            sha256=self.sha256,
            device=self.device,
            default=default,
            format=self.format,
            keypoints=self.keypoints,
        )


class Registry:
    """Every served model, by name. Owned by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}
        self.state = "loading"
        self.error: str | None = None  # the whole text, for the logs only
        self.error_code: str | None = None  # what a caller sees (public_error)
        self.default_name = settings.default_model
        self.threads: InferenceThreads | None = None  # made by the loader (app/threads.py)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def serving(self) -> bool:
        """Ready, and so is every other process of the server (app/processes.py): what /health
        reports."""
        return self.ready and siblings.current().all_ready()

    def expected(self) -> list[str]:
        return [m.name for m in self.settings.models] or list(self.models)

    async def load(self) -> None:
        """Load and warm every model; on failure record the error and re-raise."""
        try:
            loaded = await anyio.to_thread.run_sync(self._load_all, abandon_on_cancel=True)
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self.error_code = load_error_code(exc)
            if self.threads is not None:
                self.threads.close()
            raise
        assert self.threads is not None
        self.threads.start()
        for model in loaded:
            model.start(self.settings, self.threads)
            self.models[model.name] = model
        if self.default_name is None and loaded:
            self.default_name = loaded[0].name
        self.state = "ready"
        siblings.current().mark_ready()

    def _load_all(self) -> list[LoadedModel]:
        settings = self.settings
        specs = list(settings.models)
        if not specs and settings.storage_uri:
            specs = discover_storage_models(settings.storage_uri)
        check_pins_name_models([spec.name for spec in specs], settings.model_sha256)
        device = resolve_device(settings.device)
        self.threads = policy(settings, device, siblings.current())
        hold_ultralytics_threads()
        disable_sync()
        return [self._load_one(spec, device) for spec in specs]

    def _load_one(self, spec: ModelSpec, device: str) -> LoadedModel:
        from ultralytics import YOLO

        started = time.perf_counter()
        settings = self.settings
        fmt = model_format(spec.source)
        check_runtime(fmt, spec.name, device)
        half = fmt == "pt" and (
            settings.half == "on" or (settings.half == "auto" and is_cuda(device))
        )
        if half and not is_cuda(device):
            raise RuntimeError(
                f"SERVE_HALF=on: FP16 needs a CUDA device; model {spec.name!r} would run on "
                f"{device}"
            )
        if settings.half == "on" and fmt != "pt":
            log.warning("model %s: SERVE_HALF applies to PyTorch weights; a %s export keeps "
                        "the precision it was exported with", spec.name, fmt)  # fmt: skip
        where, weights = resolve_source(spec.source, settings.storage_uri, settings.cache_dir)
        check_pin(spec.name, weights, settings.model_sha256)  # before the pickle is loaded
        assert self.threads is not None

        def make() -> Any:
            """A new instance, warmed (its first predict sets its device up); in the thread
            that will run it, an inference thread."""
            model = YOLO(where)  # an export's task, classes and input size come from its metadata
            imgsz = model.overrides.get("imgsz", 640)
            imgsz = int(max(imgsz) if isinstance(imgsz, list | tuple) else imgsz)
            model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), device=device, half=half,
                          verbose=False)  # fmt: skip
            if fmt != "pt":
                backend = model.predictor.model  # Ultralytics' AutoBackend, metadata applied
                model.overrides["imgsz"] = backend.imgsz
            return model

        instances = [self.threads.warm_up(make)]
        if fmt != "pt":  # OpenVINO (and ONNX without a GPU runtime) run on the CPU
            device = str(instances[0].predictor.model.device)
        if weights is None:
            ckpt = getattr(instances[0], "ckpt_path", None)
            weights = Path(ckpt) if ckpt and Path(ckpt).is_file() else None
        sha = sha256_path(weights) if weights else hashlib.sha256(where.encode()).hexdigest()
        model = LoadedModel(spec, instances, sha, device, half, make)
        log.info(
            "model %s ready: %s, task=%s classes=%d imgsz=%d%s device=%s%s version=%s, %s; "
            "instances: 1, up to %d on demand (%.1f s)",
            model.name, model.format, model.task, len(model.names), model.imgsz,
            " (fixed)" if model.fixed_imgsz else "", device, " fp16" if half else "",
            model.version, self.threads.describe(), self.threads.count,
            time.perf_counter() - started,
        )  # fmt: skip
        return model

    def close(self) -> None:
        """Let the inference threads end once idle (at shutdown; nothing waits here)."""
        if self.threads is not None:
            self.threads.close()

    def public_error(self) -> str | None:
        """The load failure as callers see it (/health, 503 bodies): a short code, never paths
        or the exception's text, which the log has (every route is public through /invoke)."""
        if self.error_code is None:
            return None
        return f"model loading failed: {self.error_code} (the server's log has the details)"

    def ensure_ready(self) -> None:
        """Raise :class:`NotReady` (503) unless every model is loaded and warm."""
        if not self.ready:
            detail = (self.public_error() if self.state == "failed" else None) or (
                "models are still loading; retry shortly (GET /health says when ready)"
            )
            raise NotReady(detail)

    def in_flight(self) -> int:
        """Requests admitted by every model's scheduler and not yet done (streams included)."""
        return sum(m.scheduler.depth for m in self.models.values() if m.scheduler is not None)

    def get(
        self, name: str | None, tasks: tuple[str, ...] | None = None, route: str = ""
    ) -> LoadedModel:
        """The model to use: by name, else the default (for a route that needs one of
        ``tasks``: the default when it is one, else the first model of the first such task)."""
        self.ensure_ready()
        wanted = " or ".join(tasks or ())
        if name is None:
            default = self.models.get(self.default_name or "")
            if tasks is None or (default and default.task in tasks):
                name = self.default_name
            else:
                name = next(
                    (m.name for t in tasks for m in self.models.values() if m.task == t), None
                )
                if name is None:
                    raise WrongTask(
                        f"{route} needs a {wanted} model and none is loaded "
                        f"(models: {self._listing()})"
                    )
        model = self.models.get(name or "")
        if model is None:
            raise UnknownModel(
                f"no model named {name!r}; available: {self._listing()}",
                field="model",
                allowed=list(self.models),
            )
        if tasks is not None and model.task not in tasks:
            raise WrongTask(
                f"model {model.name!r} is a {model.task} model; {route} needs a {wanted} model "
                f"(models: {self._listing()})",
                field="model",
                allowed=[m.name for m in self.models.values() if m.task in tasks],
            )
        return model

    def _listing(self) -> str:
        return ", ".join(f"{m.name} ({m.task})" for m in self.models.values()) or "none"

    def describe(self) -> ModelList:
        return ModelList(
            models=[m.info(m.name == self.default_name) for m in self.models.values()],
            default_model=self.default_name,
            deployed_model_id=self.settings.deployed_model_id,
            replica_id=self.settings.replica_id,
        )
