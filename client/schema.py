"""The wire contract between the server (``app/``), the client and the emulator.

Every request, response and event body is one of these msgspec Structs. The server imports
this module; nothing here imports torch or the server. Codecs are built once, below.

Coordinates are pixels of the original image (after EXIF orientation), ``x`` to the right and
``y`` down; boxes are ``x1, y1, x2, y2``; angles are radians, clockwise on screen (``y`` down),
as Ultralytics gives them.

Every task's answer is here: detect, segment, pose and obb answer :class:`InferenceResponse`
(a :class:`Detection` carries a mask, keypoints or a rotated box as the task has them),
classify answers :class:`ClassifyResponse`.
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


class Keypoint(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One keypoint of a pose detection, in pixels; ``confidence`` is the model's visibility
    score (0..1), absent for a model whose keypoints have none (shape ``[K, 2]``)."""

    x: float
    y: float
    confidence: float | None = None


class RotatedBox(Struct, frozen=True, kw_only=True):
    """An oriented box: centre, size and rotation (radians, as Ultralytics' ``xywhr``), and its
    four corners ``[[x, y], ...]`` in pixels (in Ultralytics' ``xyxyxyxy`` order)."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float
    corners: list[list[float]]


class KeypointLayout(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a pose model's keypoints are: ``shape`` ``[K, 3]`` (x, y, visibility) or ``[K, 2]``,
    their names in order when the model has them, and the skeleton (pairs of keypoint indexes
    drawn as lines) when the model defines one (COCO's for a 17-keypoint person model)."""

    shape: list[int]
    names: list[str] | None = None
    skeleton: list[list[int]] | None = None


class Detection(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One detected object. ``box`` is always there (for an oriented box: the axis-aligned box
    around it); ``mask`` on /segment, ``keypoints`` on /pose, ``rotated_box`` on /obb."""

    class_id: int
    class_name: str
    confidence: float
    box: Box
    track_id: int | None = None
    mask: Mask | None = None
    keypoints: list[Keypoint] | None = None
    rotated_box: RotatedBox | None = None


class Classification(Struct, frozen=True, kw_only=True):
    """One class of a classification, with the model's confidence in it."""

    class_id: int
    class_name: str
    confidence: float


class ImageResult(Struct, frozen=True, kw_only=True):
    """The detections for one input image, with that image's size."""

    width: int
    height: int
    detections: list[Detection]


class InferenceResponse(Struct, frozen=True, kw_only=True):
    """Answer of ``/detect``, ``/segment``, ``/pose`` and ``/obb``: one result per input image,
    in order; a pose model's answer says what its keypoints are (``keypoints``)."""

    model: str
    version: str
    deployed_model_id: str
    task: str
    results: list[ImageResult]
    replica_id: str | None = None  # the replica that answered (also the X-Replica-Id header)
    keypoints: KeypointLayout | None = None


class ClassifyResult(Struct, frozen=True, kw_only=True):
    """The classification of one input image: its top ``top_k`` classes, best first."""

    width: int
    height: int
    classes: list[Classification]


class ClassifyResponse(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Answer of ``/classify``: one result per input image, in order."""

    model: str
    version: str
    deployed_model_id: str
    task: str
    results: list[ClassifyResult]
    replica_id: str | None = None


class AnnotatedImage(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One annotated image (base64) with the detections drawn on it (for a classification
    model: no detections, its top classes in ``classes``)."""

    width: int
    height: int
    detections: list[Detection]
    media_type: str
    image: str
    classes: list[Classification] | None = None


class AnnotateResponse(Struct, frozen=True, kw_only=True):
    """Answer of ``/annotate`` when the client asks for ``application/json``."""

    model: str
    version: str
    deployed_model_id: str
    results: list[AnnotatedImage]
    replica_id: str | None = None


class ModelInfo(Struct, frozen=True, kw_only=True):
    """What the server knows about one loaded model: ``task`` is one of Ultralytics' five
    (detect, segment, classify, pose, obb); a pose model says what its keypoints are."""

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
    keypoints: KeypointLayout | None = None


class ModelList(Struct, frozen=True, kw_only=True):
    """``GET /models``; ``max_pixels`` (per image) and ``max_body_bytes`` (per request) are the
    server's input limits: the client scales down a photo over them before upload."""

    models: list[ModelInfo]
    default_model: str | None
    deployed_model_id: str
    replica_id: str | None = None
    max_pixels: int | None = None
    max_body_bytes: int | None = None


class Health(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``GET /health``: ``ok`` (200) once every model is warm, else ``loading``/``failed`` or
    ``shutting-down`` (503)."""

    status: Literal["ok", "loading", "failed", "shutting-down"]
    deployed_model_id: str
    replica_id: str  # which replica of the deployed model answered: host name and process id
    models: dict[str, bool]
    detail: str | None = None


ProblemCode = Literal[
    "bad-request",
    "invalid-image",
    "invalid-video",
    "invalid-parameter",
    "wrong-task",
    "uri-not-allowed",
    "object-forbidden",
    "not-found",
    "unknown-model",
    "object-not-found",
    "method-not-allowed",
    "payload-too-large",
    "unsupported-media-type",
    "overloaded",
    "internal",
    "http-error",
    "storage-unavailable",
    "not-ready",
    "shutting-down",
]
"""Every ``code`` the server answers (``app/errors.py`` maps its exceptions to them; the client
maps them back). :class:`Problem` decodes ``code`` as any string, so a client keeps working
against a newer server that adds one."""


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


#: The Ultralytics tasks that answer with boxes (all but classify).
BOX_TASKS: tuple[str, ...] = ("detect", "segment", "pose", "obb")


class ModelParameters(Struct, kw_only=True, forbid_unknown_fields=True):
    """What every inference route takes: ``model`` (else the server's default for the route's
    task) and ``imgsz`` (overrides the model's input size).

    From the query string, form fields or a JSON ``parameters`` object; a route refuses any
    parameter that is not one of its own.
    """

    model: str | None = None
    imgsz: Annotated[int, Meta(ge=32, le=4096)] | None = None


TopK = Annotated[int, Meta(ge=1, le=1000)]


class ClassifyParameters(ModelParameters, kw_only=True, forbid_unknown_fields=True):
    """``/classify``: ``top_k`` classes per image (best first)."""

    top_k: TopK = 5


class DetectParameters(ModelParameters, kw_only=True, forbid_unknown_fields=True):
    """``/detect``'s (and ``/pose``'s and ``/obb``'s) parameters, which every route that
    answers boxes takes too. ``classes`` filters by class names or ids."""

    conf: Probability = 0.25
    iou: Probability = 0.7
    max_det: Annotated[int, Meta(ge=1, le=1000)] = 300
    classes: list[int | str] | None = None


class PredictParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/predict`` (any model): those of ``/detect`` (``confidence`` is ``conf``), and
    ``top_k`` for a classification model."""

    top_k: TopK = 5


class SegmentParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/segment``: ``rle`` adds COCO RLE to each mask."""

    rle: bool = False


class AnnotateParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/annotate``: ``format`` picks the drawn image's format (else the ``Accept`` header)."""

    format: Literal["jpeg", "png"] | None = None


Tracker = Literal["none", "bytetrack", "botsort"]


class StreamParameters(DetectParameters, kw_only=True, forbid_unknown_fields=True):
    """``/stream``: those of ``/detect`` plus tracking, frame selection, ``rle`` (masks of a
    segmentation model) and ``top_k`` (a classification model's classes per frame).

    ``track`` keeps object ids across frames (state lives for one request; not for a
    classification model). ``vid_stride`` runs every n-th frame. ``max_frames`` stops after
    that many processed frames.
    """

    rle: bool = False
    top_k: TopK = 5
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
    keypoints: KeypointLayout | None = None  # a pose model's keypoints


class StreamFrame(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``event: frame`` (SSE id = ``index``): one processed frame's detections (a
    classification model's: none, its top classes in ``classes``)."""

    index: int  # position of the frame in the source (0-based, counts skipped frames)
    timestamp_ms: float | None  # position in the video; None for a run of frames
    inference_ms: float
    detections: list[Detection]
    classes: list[Classification] | None = None


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


class GuideDetection(Struct, frozen=True, kw_only=True, omit_defaults=True):
    class_id: int
    class_name: str
    confidence: float
    bbox: list[float]  # [x1, y1, x2, y2] in pixels
    keypoints: list[list[float]] | None = None  # pose: [[x, y, visibility], ...]
    xywhr: list[float] | None = None  # obb: [cx, cy, width, height, angle in radians]


class GuidePrediction(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One image's prediction: ``detections`` and their count for a model that answers boxes,
    ``classes`` (the top ``top_k``, best first) for a classification model."""

    detections: list[GuideDetection] | None = None
    detection_count: int | None = None
    classes: list[Classification] | None = None


class PredictResponse(Struct, frozen=True, kw_only=True, rename="camel"):
    """``{"predictions": [...], "deployedModelId": ..., "model": ..., "modelVersionId": ...}``."""

    predictions: list[GuidePrediction]
    deployed_model_id: str
    model: str
    model_version_id: str


# --- media types: what a body's first bytes announce -----------------------------------------

OCTET_STREAM = "application/octet-stream"
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"BM", "image/bmp"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
#: The top-level atoms an MP4/QuickTime file may open with (not always ``ftyp``).
QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
#: Each video media type :func:`sniff` names, and the file suffix FFmpeg knows it by.
VIDEO_SUFFIXES = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mp4",
    "video/webm": ".mkv",
    "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi",
    "image/gif": ".gif",
}


def sniff(data: bytes) -> str:
    """The media type an image's or video's first bytes announce (else octet-stream): the one
    table the client (what it sends) and the server (what it opens) both read."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    if data[4:8] in QUICKTIME_ATOMS:
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska and WebM
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    return OCTET_STREAM


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
decode_classify = msgspec.json.Decoder(ClassifyResponse).decode
decode_annotate = msgspec.json.Decoder(AnnotateResponse).decode
decode_models = msgspec.json.Decoder(ModelList).decode
decode_frames_request = msgspec.json.Decoder(FramesRequest).decode
STREAM_DECODERS: dict[str, Callable[[bytes | str], Any]] = {
    name: msgspec.json.Decoder(kind).decode for name, kind in STREAM_EVENTS.items()
}
