"""The wire contract between the server (``app/``), the client and the emulator.

Every request, response and event body is one of these msgspec Structs. The server imports
this module; nothing here imports torch or the server. Codecs are built once, below.

Coordinates are pixels of the original image (after EXIF orientation), ``x`` to the right and
``y`` down; boxes are ``x1, y1, x2, y2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct


class Box(Struct, frozen=True, kw_only=True):
    """An axis-aligned box in pixels of the original image."""

    x1: float
    y1: float
    x2: float
    y2: float


class Rle(Struct, frozen=True, kw_only=True):
    """COCO run-length encoding of a binary mask (column-major, compressed counts)."""

    size: list[int]  # [height, width]
    counts: str


class Mask(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An instance mask: outer polygons as [[x, y], ...] in pixels, and COCO RLE on request."""

    polygons: list[list[list[float]]]
    rle: Rle | None = None


class Detection(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One detected object."""

    class_id: int
    class_name: str
    confidence: float
    box: Box
    track_id: int | None = None
    mask: Mask | None = None


class ImageResult(Struct, frozen=True, kw_only=True):
    """The detections for one input image, with that image's size."""

    width: int
    height: int
    detections: list[Detection]


class InferenceResponse(Struct, frozen=True, kw_only=True):
    """Answer of ``/detect`` and ``/segment``: one result per input image, in order."""

    model: str
    version: str
    deployed_model_id: str
    task: str
    results: list[ImageResult]
    replica_id: str | None = None  # the replica that answered (also the X-Replica-Id header)


class AnnotatedImage(Struct, frozen=True, kw_only=True):
    """One annotated image (base64) with the detections drawn on it."""

    width: int
    height: int
    detections: list[Detection]
    media_type: str
    image: str


class AnnotateResponse(Struct, frozen=True, kw_only=True):
    """Answer of ``/annotate`` when the client asks for ``application/json``."""

    model: str
    version: str
    deployed_model_id: str
    results: list[AnnotatedImage]
    replica_id: str | None = None


class ModelInfo(Struct, frozen=True, kw_only=True):
    """What the server knows about one loaded model."""

    name: str
    task: str
    classes: dict[int, str]
    imgsz: int
    source: str
    version: str
    sha256: str
    device: str
    default: bool
    format: str = "pt"  # pt (PyTorch weights or a model config), onnx, openvino


class ModelList(Struct, frozen=True, kw_only=True):
    models: list[ModelInfo]
    default_model: str | None
    deployed_model_id: str
    replica_id: str | None = None


class Health(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``GET /health``: ``ok`` (200) once every model is warm, else ``loading``/``failed`` or
    ``shutting-down`` (503)."""

    status: Literal["ok", "loading", "failed", "shutting-down"]
    deployed_model_id: str
    replica_id: str  # which replica of the deployed model answered: host name and process id
    models: dict[str, bool]
    detail: str | None = None


class Problem(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, the body of every error response (application/problem+json).

    ``type`` is ``urn:vertex-yolo:problem:<code>``; the client maps ``code`` to an exception.
    """

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    request_id: str | None = None
    field: str | None = None
    allowed: list[str] | None = None


PROBLEM_TYPE_PREFIX = "urn:vertex-yolo:problem:"

# --- requests -------------------------------------------------------------------------------

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class DetectParameters(Struct, kw_only=True, forbid_unknown_fields=True):
    """``/detect``'s (and ``/predict``'s) parameters, which every inference route takes too.

    From the query string, form fields or a JSON ``parameters`` object; a route refuses any
    parameter that is not one of its own. ``classes`` filters by class names or ids; ``imgsz``
    overrides the model's input size.
    """

    model: str | None = None
    conf: Probability = 0.25
    iou: Probability = 0.7
    max_det: Annotated[int, Meta(ge=1, le=1000)] = 300
    classes: list[int | str] | None = None
    imgsz: Annotated[int, Meta(ge=32, le=4096)] | None = None


class SegmentParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/segment``: ``rle`` adds COCO RLE to each mask."""

    rle: bool = False


class AnnotateParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/annotate``: ``format`` picks the drawn image's format (else the ``Accept`` header)."""

    format: Literal["jpeg", "png"] | None = None


Tracker = Literal["none", "bytetrack", "botsort"]


class StreamParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/stream``: those of ``/detect`` plus tracking, frame selection and ``rle`` (masks of a
    segmentation model).

    ``track`` keeps object ids across frames (state lives for one request). ``vid_stride``
    runs every n-th frame. ``max_frames`` stops after that many processed frames.
    """

    rle: bool = False
    track: Tracker = "none"
    vid_stride: Annotated[int, Meta(ge=1, le=1000)] = 1
    max_frames: Annotated[int, Meta(ge=1)] | None = None


class Binary(Struct, frozen=True, forbid_unknown_fields=True, rename={"gcs_uri": "gcsUri"}):
    """A binary value in JSON, one of two forms: Vertex's ``{"b64": "..."}``, or a Cloud Storage
    object the server reads, ``{"gcsUri": "gs://bucket/object"}`` (only from the buckets the
    server allows: ``SERVE_ALLOWED_BUCKETS``)."""

    b64: str | None = None
    gcs_uri: str | None = None


class Instance(Struct, frozen=True, forbid_unknown_fields=True):
    """One image of a JSON request: ``{"image": "<base64>"}``, ``{"image": {"b64": ...}}`` or
    ``{"image": {"gcsUri": "gs://..."}}``."""

    image: str | Binary


class PredictRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """The Vertex-style JSON body: ``{"instances": [...], "parameters": {...}}``."""

    instances: list[Instance]
    parameters: dict[str, Any] | None = None


class FramesRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """``/stream``'s JSON body: frames ``{"frames": ["<base64>" or {"b64"|"gcsUri": ...}, ...]}``
    or a video in Cloud Storage ``{"video": {"gcsUri": "gs://..."}}``, and ``"parameters"``."""

    frames: list[str | Binary] = []
    video: Binary | None = None
    parameters: dict[str, Any] | None = None


# --- /stream events (Server-Sent Events; the SSE event name says which Struct the data is) ----


class StreamStart(Struct, frozen=True, kw_only=True):
    """``event: start``: sent once, before any frame."""

    model: str
    version: str
    deployed_model_id: str
    task: str
    source: Literal["video", "frames"]
    fps: float | None  # the source's frame rate (None for a run of frames)
    frames: int | None  # frames that will be processed, when known (after vid_stride/max_frames)
    width: int
    height: int
    track: Tracker
    replica_id: str | None = None  # the replica running the stream (an SDK stream hides headers)


class StreamFrame(Struct, frozen=True, kw_only=True):
    """``event: frame`` (SSE id = ``index``): one processed frame's detections."""

    index: int  # position of the frame in the source (0-based, counts skipped frames)
    timestamp_ms: float | None  # position in the video; None for a run of frames
    inference_ms: float
    detections: list[Detection]


class StreamEnd(Struct, frozen=True, kw_only=True):
    """``event: end``: the last event of a stream that completed."""

    frames: int  # frames processed
    elapsed_ms: float
    fps: float  # frames processed per second of wall time
    class_counts: dict[str, int]  # detections per class name over all frames
    tracks: int  # distinct track ids (0 without tracking)


# ``event: error`` carries a :class:`Problem` and ends the stream.
STREAM_EVENTS: dict[str, type] = {
    "start": StreamStart,
    "frame": StreamFrame,
    "end": StreamEnd,
    "error": Problem,
}


# --- /predict (the Ultralytics Vertex guide's shape) ------------------------------------------


class GuideDetection(Struct, frozen=True, kw_only=True):
    class_id: int
    class_name: str
    confidence: float
    bbox: list[float]  # [x1, y1, x2, y2] in pixels


class GuidePrediction(Struct, frozen=True, kw_only=True):
    detections: list[GuideDetection]
    detection_count: int


class PredictResponse(Struct, frozen=True, kw_only=True, rename="camel"):
    """``{"predictions": [...], "deployedModelId": ..., "model": ..., "modelVersionId": ...}``."""

    predictions: list[GuidePrediction]
    deployed_model_id: str
    model: str
    model_version_id: str


# --- headers -------------------------------------------------------------------------------

#: Inference responses carry ``Server-Timing: decode;dur=2.9, inference;dur=14.5, encode;dur=0.3``
#: (milliseconds), the server's own breakdown of where a request's time went.
SERVER_TIMING = "Server-Timing"


def format_server_timing(timings_ms: dict[str, float]) -> str:
    """``{"decode": 2.94, "inference": 14.5}`` -> ``decode;dur=2.9, inference;dur=14.5``."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in timings_ms.items())


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``decode;dur=2.9, inference;dur=14.5`` -> ``{"decode": 2.9, "inference": 14.5}``.

    Metrics without a (numeric) ``dur`` are left out; a quoted value is accepted.
    """
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip() == "dur":
                try:
                    out[name] = float(value.strip().strip('"'))
                except ValueError:
                    continue
    return out


# --- codecs, built once ---------------------------------------------------------------------

json_encoder = msgspec.json.Encoder()
decode_predict_request = msgspec.json.Decoder(PredictRequest).decode
decode_problem = msgspec.json.Decoder(Problem).decode
decode_inference = msgspec.json.Decoder(InferenceResponse).decode
decode_annotate = msgspec.json.Decoder(AnnotateResponse).decode
decode_models = msgspec.json.Decoder(ModelList).decode
decode_frames_request = msgspec.json.Decoder(FramesRequest).decode
STREAM_DECODERS: dict[str, Callable[[bytes | str], Any]] = {
    name: msgspec.json.Decoder(kind).decode for name, kind in STREAM_EVENTS.items()
}
