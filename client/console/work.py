"""What the console's pages ask of the endpoint, as blocking calls over one :class:`Client`.

:class:`Console` holds the client and where it points (a Vertex endpoint, the emulator, or one
URL); each method answers one page request with plain data (msgspec Structs and dicts) the web
layer (:mod:`client.console.web`) encodes as JSON. Errors are the client's own
(:mod:`client.errors`): the web layer shows them as the CLI's one-line messages.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from client import deploy, errors
from client._client import Client
from client.ab import ROUTES, agreement, answer_of, latency_stats, video_frames
from client.ab.calls import Outcome
from client.rollout.reports import decode_report
from client.schema import ClassifyResponse, InferenceResponse, ModelList

#: The routes each task's model answers (a segmentation model answers /detect with its boxes).
ROUTES_OF_TASK = {
    "detect": ["detect"],
    "segment": ["segment", "detect"],
    "classify": ["classify"],
    "pose": ["pose"],
    "obb": ["obb"],
}
#: The parameters each route takes (the contract's; the client checks their values).
BOX_PARAMS = ("model", "conf", "iou", "max_det", "classes", "imgsz")
ROUTE_PARAMS = {route: BOX_PARAMS for route in ROUTES} | {"classify": ("model", "imgsz", "top_k")}
STREAM_PARAMS = (*BOX_PARAMS, "top_k", "track", "vid_stride", "max_frames")
MODELS_TTL_S = 10.0  # a deployed model's /models answer is reused this long (endpoint refresh)
COMPARE_FRAMES = 8  # a video compared: this many frames, spread over its length
FRAME_MAX_SIDE = 960  # frames sent to the page are scaled down to this


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for an error (``client.cli``): ``error: ...``, with the
    request id of an API error."""
    extra = ""
    if isinstance(exc, errors.APIError) and exc.request_id:
        extra = f" (request id {exc.request_id})"
    return f"error: {exc}{extra}"


def http_status(exc: BaseException) -> int:
    """The status the console answers a page with for a client error: a bad argument 400, an API
    error its own (a 429 stays 429), an unreachable or slow endpoint 502 / 504."""
    if isinstance(exc, errors.ParameterError):
        return 400
    if isinstance(exc, errors.APIError):
        return exc.status if 400 <= exc.status < 600 else 502
    if isinstance(exc, errors.TimeoutError):
        return 504
    return 502


def parse_params(form: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """The inference parameters a form gives (empty fields left to the server's defaults),
    converted as the CLI's options are; a value that does not convert is a ParameterError."""
    out: dict[str, Any] = {}
    for name in names:
        text = (form.get(name) or "").strip()
        if not text or (name == "track" and text == "none"):
            continue
        if name == "classes":
            out[name] = [c.strip() for c in text.split(",") if c.strip()]
            continue
        kind: type = (
            float if name in ("conf", "iou") else str if name in ("model", "track") else int
        )
        try:
            out[name] = kind(text)
        except ValueError:
            raise errors.ParameterError(f"{name} must be a number, not {text!r}") from None
    return out


def _routes(models: ModelList) -> list[str]:
    found = {r for m in models.models for r in ROUTES_OF_TASK.get(m.task, [])}
    return [r for r in ROUTES if r in found]


@dataclass
class Timed:
    """One call's answer (or its error line) and its latency as the console saw it."""

    result: Any = None
    error: str | None = None
    status: int | None = None
    latency_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "error": self.error,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
        }


@dataclass
class Console:
    """The console's state: the client, and what it knows of where the client points.

    ``endpoint``: the Vertex endpoint (id or resource name) for ``deploy status``; ``None`` for
    one URL. ``info_file``: a running emulator's info file (its replicas). ``rollout_report``:
    the report file ``client rollout --report`` writes, shown on the rollout page.
    """

    client: Client
    where: str
    endpoint: str | None = None
    info_file: str | None = None
    rollout_report: str | None = None
    _models: dict[str, tuple[float, ModelList]] = field(default_factory=dict)

    # -- the endpoint ----------------------------------------------------------------------------

    def models(self, deployed_model_id: str | None = None, fresh: bool = False) -> ModelList:
        """The models a deployed model serves (kept ``MODELS_TTL_S``); untargeted: fresh."""
        key = deployed_model_id or ""
        cached = self._models.get(key)
        if (
            deployed_model_id
            and cached
            and not fresh
            and time.monotonic() - cached[0] < MODELS_TTL_S
        ):
            return cached[1]
        models = self.client.models(deployed_model_id=deployed_model_id)
        self._models[key] = (time.monotonic(), models)
        return models

    def endpoint_view(self) -> dict[str, Any]:
        """The endpoint as ``deploy status`` knows it (replicas from an emulator's info file),
        and each deployed model's models (names, versions, tasks) and routes."""
        if self.endpoint is None:  # one server: its own deployed model, all the traffic
            models = self.models(fresh=True)
            return {
                "where": self.where,
                "kind": "url",
                "status": None,
                "deployed_models": [
                    {
                        "id": models.deployed_model_id,
                        "display_name": models.deployed_model_id,
                        "traffic_percentage": 100,
                        "models": models,
                        "routes": _routes(models),
                        "error": None,
                    }
                ],
            }
        status = deploy.endpoint_status(self.endpoint)
        if self.info_file:
            status = deploy.with_replicas(status, self.info_file)
        rows = []
        for d in status.deployed_models:
            row: dict[str, Any] = {
                "id": d.id,
                "display_name": d.display_name,
                "traffic_percentage": d.traffic_percentage,
                "models": None,
                "routes": [],
                "error": None,
            }
            try:
                models = self.models(d.id)
                row |= {"models": models, "routes": _routes(models)}
            except errors.VertexYoloError as exc:  # one deployed model down: said on its row
                row["error"] = error_line(exc)
            rows.append(row)
        return {
            "where": self.where,
            "kind": "emulator" if self.info_file else "vertex",
            "status": status,
            "deployed_models": rows,
        }

    # -- inference -------------------------------------------------------------------------------

    def _call(
        self, route: str, image: bytes, deployed_model_id: str | None, params: dict[str, Any]
    ) -> InferenceResponse | ClassifyResponse:
        if route not in ROUTES:
            raise errors.ParameterError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
        method = getattr(self.client, route)
        result: InferenceResponse | ClassifyResponse = method(
            image, deployed_model_id=deployed_model_id or None, **params
        )
        return result

    def infer(
        self, route: str, image: bytes, deployed_model_id: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        """One image through ``route``: the answer and its latency (errors raised)."""
        start = time.perf_counter()
        result = self._call(route, image, deployed_model_id, params)
        return {"result": result, "latency_ms": round((time.perf_counter() - start) * 1e3, 1)}

    def _timed(
        self, route: str, image: bytes, deployed_model_id: str, params: dict[str, Any]
    ) -> Timed:
        start = time.perf_counter()
        try:
            result = self._call(route, image, deployed_model_id, params)
        except errors.ParameterError:
            raise
        except errors.VertexYoloError as exc:
            took = (time.perf_counter() - start) * 1e3
            return Timed(error=error_line(exc), status=http_status(exc), latency_ms=took)
        return Timed(result=result, latency_ms=(time.perf_counter() - start) * 1e3)

    def compare(
        self,
        route: str,
        media: bytes,
        video: Path | None,
        ids: tuple[str, str],
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """The same image (or ``COMPARE_FRAMES`` frames of a video) through two deployed models,
        pinned: each side's answers and latency, and B's agreement with A as ``ab targeted``
        measures it (:func:`client.ab.agreement`, :func:`client.ab.latency_stats`)."""
        if not all(ids):
            raise errors.ParameterError("choose two deployed models to compare")
        frames = _spread_frames(video) if video is not None else [media]
        # interleaved, frame by frame, as ab targeted sends them: both see the same conditions
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="console-compare") as pool:
            calls = [[pool.submit(self._timed, route, f, dm, params) for dm in ids] for f in frames]
            sides = [[row[j].result() for row in calls] for j in range(len(ids))]
        answers = [
            [answer_of(Outcome(result=t.result)) if t.result is not None else None for t in side]
            for side in sides
        ]
        agree = agreement(answers[0], answers[1], labels=("A", "B"), task=route)
        return {
            "route": route,
            "frames": len(frames),
            "images": [_data_url(f) for f in frames] if video is not None else [],
            "sides": [
                {
                    "label": label,
                    "deployed_model_id": dm,
                    "calls": [t.as_dict() for t in side],
                    "errors": sum(t.error is not None for t in side),
                    "latency": latency_stats([t.latency_ms for t in side if t.error is None]),
                }
                for label, dm, side in zip(("A", "B"), ids, sides, strict=True)
            ],
            "agreement": agree,
        }

    def stream_events(
        self, video: Path, deployed_model_id: str | None, params: dict[str, Any]
    ) -> Iterator[tuple[str, Any]]:
        """``/stream`` over a video: its events as they arrive, each frame event with the
        source frame it describes (a JPEG data URL, read here with OpenCV), so the page draws
        the frame and its detections together. The first event is opened before this returns:
        a refused video raises here, before any event."""
        start = time.perf_counter()
        stream = self.client.stream(
            str(video), deployed_model_id=deployed_model_id or None, **params
        )
        return _relay(stream, video, start)

    # -- the rollout -----------------------------------------------------------------------------

    def rollout(self) -> dict[str, Any]:
        """The rollout report file as it is now (``None`` until it is written)."""
        if not self.rollout_report:
            return {"path": None, "report": None, "modified": None}
        path = Path(self.rollout_report)
        try:
            data, modified = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return {"path": str(path), "report": None, "modified": None}
        except OSError as exc:
            raise errors.ParameterError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            report = decode_report(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.ParameterError(f"{path} is not a rollout report: {exc}") from None
        return {"path": str(path), "report": report, "modified": modified}


def _data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _spread_frames(video: Path) -> list[bytes]:
    """``COMPARE_FRAMES`` frames spread over a video (its frame count read first)."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    every = max(1, count // COMPARE_FRAMES) if count > 0 else 1
    return video_frames(video, every=every, max_frames=COMPARE_FRAMES)


def _relay(stream: Any, video: Path, start: float) -> Iterator[tuple[str, Any]]:
    import cv2

    capture = cv2.VideoCapture(str(video))
    position = -1
    try:
        with stream:
            for event in stream:
                kind = type(event).__name__.removeprefix("Stream").lower()
                if kind != "frame":
                    yield kind, event
                    continue
                image = None
                while position < event.index:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    position += 1
                    if position == event.index:
                        image = _jpeg(cv2, frame)
                took = round((time.perf_counter() - start) * 1e3, 1)
                yield "frame", {"frame": event, "image": image, "elapsed_ms": took}
    finally:
        capture.release()


def _jpeg(cv2: Any, frame: Any) -> str:
    height, width = frame.shape[:2]
    scale = FRAME_MAX_SIDE / max(height, width)
    if scale < 1:
        frame = cv2.resize(frame, (round(width * scale), round(height * scale)))
    return _data_url(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
