"""``Client`` and ``AsyncClient``: routes and contract types over a transport.

Both share :class:`_Base`, which builds requests (validating parameters against the contract's
Structs) and turns responses into results or typed errors; the two classes only differ in how
they wait. Results are the Structs of :mod:`client.schema`, decoded strictly; each names the
deployed model and model version that served it.

Pinning (``deployed_model_id=``): through Vertex the call goes to
``.../deployedModels/{id}/invoke/...``. A client made with ``from_url`` talks to one server,
which cannot route: the id is checked against the one the server reports
(``X-Deployed-Model-Id`` or the body's ``deployed_model_id``), and a different one raises
:class:`~client.errors.DeployedModelNotFoundError` (the server has run the call by then; its
result is withheld rather than passed off as the pinned model's).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar, Unpack, cast, overload
from urllib.parse import urlencode

import msgspec

from client import errors, resize, vertex
from client._bridge import AsyncCalls
from client._retry import RetryPolicy, async_retrying, parse_retry_after, retrying
from client._stream import AsyncStream, Stream
from client.batch.engine import BatchRun, Route, Send
from client.batch.runs import AsyncBatchStream, BatchStream
from client.media import (
    Channels,
    ImageFormat,
    ImageInput,
    Images,
    StreamSource,
    VideoInput,
    encode_image,
    frames_body,
    images_body,
    is_many,
    is_uri,
    video_body,
)
from client.schema import (
    AnnotateParameters,
    AnnotateResponse,
    ClassifyParameters,
    ClassifyResponse,
    DetectParameters,
    InferenceResponse,
    ModelList,
    ModelParameters,
    SegmentParameters,
    StreamParameters,
    StreamStart,
    Tracker,
    decode_annotate,
    decode_classify,
    decode_inference,
    decode_models,
)
from client.sse import StreamDecoder, StreamEvent
from client.transports import (
    AsyncBaseTransport,
    AsyncHttpTransport,
    AsyncVertexTransport,
    BaseTransport,
    HttpTransport,
    Request,
    Response,
    VertexTransport,
)
from client.video.engine import VideoOptions, VideoRun
from client.video.runs import AsyncVideoStream, VideoStream
from client.video.source import VideoSource, open_source

T = TypeVar("T")
DEFAULT_TIMEOUT = 120.0  # the SDK remounts a keep-alive adapter on every call above 120 s


class Annotation(msgspec.Struct, frozen=True, kw_only=True):
    """``/annotate``'s image answer: the drawn image and who drew it."""

    image: bytes
    media_type: str
    detection_count: int
    model: str | None
    version: str | None
    deployed_model_id: str | None
    request_id: str | None

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            f.write(self.image)


class ImageParams(TypedDict, total=False):
    """``/detect``'s parameters as keyword arguments (``client.schema.DetectParameters``; also
    ``/pose``'s and ``/obb``'s); any not given takes the server's default. Checked against the
    contract before anything is sent."""

    model: str
    conf: float
    iou: float
    max_det: int
    classes: list[int | str] | int | str
    imgsz: int


class BatchParams(ImageParams, total=False):
    """``batch``'s: the route's own (``top_k`` for ``route="classify"``, which takes no box
    filters)."""

    top_k: int


class ClassifyParams(TypedDict, total=False):
    """``/classify``'s (``client.schema.ClassifyParameters``)."""

    model: str
    imgsz: int
    top_k: int


class SegmentParams(ImageParams, total=False):
    """``/segment``'s (``client.schema.SegmentParameters``)."""

    rle: bool


class AnnotateParams(ImageParams, total=False):
    """``/annotate``'s (``client.schema.AnnotateParameters``)."""

    format: Literal["jpeg", "png"]


class StreamParams(ImageParams, total=False):
    """``/stream``'s parameters (``client.schema.StreamParameters``)."""

    rle: bool
    top_k: int
    track: Tracker
    vid_stride: int
    max_frames: int


@dataclass
class _Call:
    """A prepared call: the request, and how to read its successful response."""

    request: Request
    decode: Callable[[Response], Any]
    #: Set when an image is large and the server's limits are not known yet: the call is
    #: built again (images scaled to fit) once they are (:meth:`_Base._learnt_limits`).
    rebuild: Callable[[], _Call] | None = None


def _query(values: dict[str, Any]) -> str:
    items = []
    for key, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        items.append((key, value))
    return "?" + urlencode(items) if items else ""


ROUTE_PARAMETERS: dict[str, type[ModelParameters]] = {
    "/detect": DetectParameters,
    "/segment": SegmentParameters,
    "/pose": DetectParameters,
    "/obb": DetectParameters,
    "/classify": ClassifyParameters,
    "/annotate": AnnotateParameters,
    "/stream": StreamParameters,
}
#: How each image route's JSON answer decodes.
ROUTE_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "/classify": decode_classify,
    "/annotate": decode_annotate,
}


def _validate(kind: type[ModelParameters], given: Mapping[str, Any]) -> dict[str, Any]:
    """The given (non-None) parameters, checked against the contract's Struct."""
    given = {k: v for k, v in given.items() if v is not None}
    if isinstance(given.get("classes"), str | int):
        given["classes"] = [given["classes"]]
    try:
        msgspec.convert(given, kind)
    except msgspec.ValidationError as exc:
        raise errors.ParameterError(errors.invalid_parameter(exc, given)) from None
    return given


class _Base:
    """What both clients share: building requests and reading responses (no I/O)."""

    def __init__(
        self,
        transport: Any,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: RetryPolicy | int | None = None,
        image_format: ImageFormat = "jpeg",
        channels: Channels = "bgr",
        max_side: int | None = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise errors.ParameterError(f"timeout must be positive seconds or None, not {timeout}")
        if image_format not in ("jpeg", "png"):
            raise errors.ParameterError(
                f"image_format must be 'jpeg' or 'png', not {image_format!r}"
            )
        if channels not in ("bgr", "rgb"):
            raise errors.ParameterError(f"channels must be 'bgr' or 'rgb', not {channels!r}")
        self.transport = transport
        self.timeout = timeout
        if isinstance(retries, int):
            retries = RetryPolicy(attempts=retries + 1)
        self.retries = retries or RetryPolicy()
        self.image_format: ImageFormat = image_format
        self.channels: Channels = channels
        self.max_side = resize.check_max_side(max_side)
        #: The server's (max_pixels, max_body_bytes), from /models once an image needs them.
        self.server_limits: tuple[int | None, int | None] | None = None

    # -- requests ---------------------------------------------------------------------------

    def _request(
        self,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
        *,
        deployed_model_id: str | None = None,
        accept: str = "application/json",
        stream: bool = False,
    ) -> Request:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        return Request(
            path=path,
            body=body,
            headers=headers,
            deployed_model_id=deployed_model_id,
            stream=stream,
            timeout=self.timeout,
        )

    def _models_call(self, deployed_model_id: str | None) -> _Call:
        request = self._request("/models", deployed_model_id=deployed_model_id)
        return _Call(request, lambda r: self._decode(r, decode_models, request))

    def _fit_images(self, images: Images) -> tuple[Images, list[resize.Scaled | None], bool]:
        """The images to send, each scaled down when over a limit (:mod:`client.resize`), what
        was scaled, and whether the server's limits are still to be learnt for them."""
        if self.max_side == 0:
            return images, [], False
        many = is_many(images)
        items = list(cast("Sequence[ImageInput]", images)) if many else [images]
        blobs: list[Any] = []
        names: list[str] = []
        for i, item in enumerate(items):
            if is_uri(item):
                blobs.append(item)
            else:
                data, _ = encode_image(
                    cast("ImageInput", item), image_format=self.image_format, channels=self.channels
                )
                blobs.append(data)
            names.append(
                os.fspath(item)
                if isinstance(item, str | os.PathLike)
                else (f"image {i}" if many else "the image")
            )
        if self.server_limits is None:
            for blob in blobs:
                size = resize.image_size(blob) if isinstance(blob, bytes) else None
                if size is not None and size[0] * size[1] > resize.PROBE_PIXELS:
                    return images, [], True
        max_pixels, max_body = self.server_limits or (None, None)
        # Vertex's 10 MB holds whatever the server takes: never plan for more
        limits = resize.Limits(
            self.max_side, max_pixels, min(max_body or resize.BODY_LIMIT, resize.BODY_LIMIT)
        )
        room = (limits.max_bytes or resize.BODY_LIMIT) - resize.BODY_MARGIN
        total = sum(len(b) for b in blobs if isinstance(b, bytes))
        share = room if total <= room else room // len(blobs)
        scaled: list[resize.Scaled | None] = []
        for i, blob in enumerate(blobs):
            done = None
            if isinstance(blob, bytes):
                blobs[i], done = resize.fit(blob, names[i], limits, share)
            if done is None and isinstance(items[i], str | os.PathLike):
                blobs[i] = items[i]  # a path keeps its file name in a multipart body
            scaled.append(done)
        resize.report(scaled)
        return (blobs if many else blobs[0]), (scaled if any(scaled) else []), False

    def _learnt_limits(self, models: ModelList | None) -> None:
        """Keep the server's limits (both None when ``/models`` could not say)."""
        if models is None:
            self.server_limits = (None, None)
        else:
            self.server_limits = (models.max_pixels, models.max_body_bytes)

    def _images_call(
        self,
        route: str,
        images: Images,
        params: Mapping[str, Any],
        deployed_model_id: str | None,
        accept: str = "application/json",
        decode: Callable[[bytes], Any] | None = None,
    ) -> _Call:
        query = _query(_validate(ROUTE_PARAMETERS[route], params))
        decode = decode or ROUTE_DECODERS.get(route, decode_inference)
        sent, scaled, unknown = self._fit_images(images)
        body, content_type = images_body(
            sent, image_format=self.image_format, channels=self.channels
        )
        request = self._request(
            route + query,
            body,
            content_type,
            deployed_model_id=deployed_model_id,
            accept=accept,
        )
        rebuild = (
            (lambda: self._images_call(route, images, params, deployed_model_id, accept, decode))
            if unknown
            else None
        )
        return _Call(
            request, lambda r: resize.restore(self._decode(r, decode, request), scaled), rebuild
        )

    def _annotate_call(
        self, image: Images, json: bool, params: Mapping[str, Any], deployed_model_id: str | None
    ) -> _Call:
        if json:
            return self._images_call("/annotate", image, params, deployed_model_id)
        if is_many(image):
            raise errors.ParameterError(
                "annotate() draws one image; pass json=True to annotate several"
            )
        fmt = params.get("format") or "jpeg"
        call = self._images_call(
            "/annotate", image, params, deployed_model_id, accept=f"image/{fmt}"
        )
        request = call.request
        rebuild = (
            (lambda: self._annotate_call(image, json, params, deployed_model_id))
            if call.rebuild
            else None
        )

        def decode(response: Response) -> Annotation:
            headers = response.headers
            count = headers.get("x-detection-count", "")
            annotation = Annotation(
                image=response.content,
                media_type=headers.get("content-type", f"image/{fmt}").split(";")[0],
                detection_count=int(count) if count.isdigit() else -1,
                model=headers.get("x-model-name"),
                version=headers.get("x-model-version"),
                deployed_model_id=response.deployed_model_id,
                request_id=response.request_id,
            )
            self._check_served(request, annotation.deployed_model_id)
            return annotation

        return _Call(request, decode, rebuild)

    def _stream_request(
        self, source: StreamSource, params: Mapping[str, Any], deployed_model_id: str | None
    ) -> Request:
        query = _query(_validate(StreamParameters, params))
        if is_many(source):
            frames = cast("Sequence[ImageInput]", source)
            body, content_type = frames_body(
                frames, image_format=self.image_format, channels=self.channels
            )
        else:
            body, content_type = video_body(cast("VideoInput", source))
        return self._request(
            "/stream" + query,
            body,
            content_type,
            deployed_model_id=deployed_model_id,
            accept="text/event-stream",
            stream=True,
        )

    def _video_run(
        self,
        endpoint: Any,
        source: VideoSource,
        params: Mapping[str, Any],
        deployed_model_id: str | None,
        options: VideoOptions,
    ) -> VideoRun:
        """The engine for one video: the parameters checked and the source opened first (a bad
        one fails here, before any call)."""
        checked = _validate(StreamParameters, params)
        options.check()
        capture = open_source(source, live=options.live)
        return VideoRun(
            endpoint, capture, checked, deployed_model_id=deployed_model_id, options=options
        )

    # -- responses --------------------------------------------------------------------------

    def _routed_to(self, request: Request) -> str | None:
        """The deployed model the transport itself sent the call to (Vertex), if any."""
        return request.deployed_model_id if self.transport.can_pin else None

    def _raise_for_status(self, request: Request, response: Response) -> None:
        if response.status is not None and response.status >= 400:
            raise errors.api_error(
                response.content,
                status=response.status,
                request_id=response.request_id,
                deployed_model_id=response.deployed_model_id,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                where=request.path.split("?")[0],
                pinned=self._routed_to(request),
            )

    def _decode(self, response: Response, decode: Callable[[bytes], T], request: Request) -> T:
        try:
            result = decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.APIError(
                f"{request.path.split('?')[0]} answered {response.status} with a body that does "
                f"not match the contract ({exc}): {response.content[:200]!r}",
                status=response.status or 200,
                body=response.content.decode("utf-8", "replace")[:2000],
                request_id=response.request_id,
                deployed_model_id=response.deployed_model_id,
            ) from None
        served = response.deployed_model_id or getattr(result, "deployed_model_id", None)
        self._check_served(request, served)
        return result

    def _check_served(self, request: Request, served: str | None) -> None:
        """A pinned call must have been served by the pinned deployed model."""
        wanted = request.deployed_model_id
        if not wanted or not served or served == wanted:
            return
        if self.transport.can_pin:
            detail = f"deployed model {served!r} answered a call pinned to {wanted!r}"
        else:
            detail = (
                f"this server is deployed model {served!r}, not {wanted!r}; a client made "
                "with from_url() talks to one server and cannot pick a deployed model "
                "(use from_vertex())"
            )
        raise errors.DeployedModelNotFoundError(detail, status=404, deployed_model_id=served)

    # -- opening a stream (the part that is retried like any call) -----------------------

    def _stream_decoder(self, request: Request, response: Response) -> StreamDecoder:
        self._raise_for_status(request, response)
        return StreamDecoder(
            status=response.status,
            request_id=response.request_id,
            pinned=self._routed_to(request),
        )

    def _first_event(self, request: Request, event: StreamEvent) -> StreamStart:
        if not isinstance(event, StreamStart):
            raise errors.StreamError(f"the stream began with {type(event).__name__}, not start")
        self._check_served(request, event.deployed_model_id)
        return event

    @staticmethod
    def _no_start(decoder: StreamDecoder) -> errors.VertexYoloError:
        """The body ended before ``start``: an error document raises its APIError; a clean
        end of an SSE body is a broken connection (nothing streamed yet, so retryable)."""
        try:
            decoder.close()
        except errors.StreamError as exc:
            return errors.ConnectionError(f"the stream ended before its start event: {exc}")
        return errors.StreamError("the stream ended before its start event")


class Client(_Base):
    """The synchronous client.

    Example:
        >>> client = Client.from_vertex(project="p", location="us-central1", endpoint="123")
        >>> result = client.detect("bus.jpg", conf=0.5)
        >>> result.deployed_model_id, result.version, len(result.results[0].detections)

    Args:
        endpoint: an ``aiplatform.Endpoint`` (dedicated), or any :class:`BaseTransport`.
        timeout: seconds per call (``None``: no limit); for a stream, the longest silence.
        retries: a :class:`RetryPolicy`, or the number of retries (0: none).
        image_format: how arrays and PIL images are encoded (``"jpeg"`` q95 or ``"png"``).
        channels: the channel order of numpy arrays (``"bgr"``, OpenCV's, by default).
        max_side: scale an image whose longer side is over this many pixels down before upload
            (results still in the original's pixels). Images over the request's 10 MB or the
            server's pixel limit are scaled down whatever this is; ``0`` turns scaling off
            (:mod:`client.resize`).
    """

    def __init__(self, endpoint: Any, **options: Any) -> None:
        if isinstance(endpoint, BaseTransport):
            transport = endpoint
        elif hasattr(endpoint, "invoke"):
            transport = VertexTransport(endpoint)
        else:
            raise TypeError(
                f"Client needs an aiplatform.Endpoint or a BaseTransport, not "
                f"{type(endpoint).__qualname__} (for an endpoint id use Client.from_vertex, for "
                "a URL Client.from_url)"
            )
        super().__init__(transport, **options)

    @classmethod
    def from_vertex(
        cls,
        *,
        endpoint: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        api_endpoint: str | None = None,
        api_transport: str | None = None,
        **options: Any,
    ) -> Client:
        """A client for a Vertex endpoint (id or resource name), through the SDK.

        ``api_endpoint``/``api_transport`` (e.g. ``"http://127.0.0.1:PORT"``, ``"rest"``) point
        the SDK's control plane elsewhere, such as the local emulator (this calls
        ``aiplatform.init``, which is global).
        """
        ep = vertex.endpoint(
            endpoint,
            project=project,
            location=location,
            api_endpoint=api_endpoint,
            credentials=credentials,
            api_transport=api_transport,
        )
        return cls(VertexTransport(ep, owns_endpoint=True), **options)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        verify: Any = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Client:
        """A client straight to one server (no Vertex), e.g. ``http://127.0.0.1:8080``."""
        return cls(HttpTransport(url, verify=verify, headers=headers), **options)

    def _run(self, call: _Call) -> Any:
        if call.rebuild is not None:
            if self.server_limits is None:
                try:
                    self._learnt_limits(self.models())
                except errors.VertexYoloError:  # the server answers the image itself
                    self._learnt_limits(None)
            call = call.rebuild()
        for attempt in retrying(self.retries):
            with attempt:
                response = self.transport.send(call.request)
                self._raise_for_status(call.request, response)
        return call.decode(response)

    def models(self, *, deployed_model_id: str | None = None) -> ModelList:
        """The models the (chosen) deployed model serves."""
        return self._run(self._models_call(deployed_model_id))

    def detect(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        """Detect objects in one image or a list of images (one result per image, in order)."""
        return self._run(self._images_call("/detect", images, params, deployed_model_id))

    def segment(
        self,
        images: Images,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[SegmentParams],
    ) -> InferenceResponse:
        """Instance masks (polygons; COCO RLE too with ``rle=True``). Needs a segment model."""
        return self._run(self._images_call("/segment", images, params, deployed_model_id))

    def classify(
        self,
        images: Images,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[ClassifyParams],
    ) -> ClassifyResponse:
        """Each image's ``top_k`` classes (default 5), best first. Needs a classify model."""
        return self._run(self._images_call("/classify", images, params, deployed_model_id))

    def pose(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        """Detections with their keypoints (and the model's keypoint layout in ``keypoints``).
        Needs a pose model."""
        return self._run(self._images_call("/pose", images, params, deployed_model_id))

    def obb(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        """Detections with their rotated boxes (``rotated_box``). Needs an OBB model."""
        return self._run(self._images_call("/obb", images, params, deployed_model_id))

    @overload
    def annotate(
        self,
        image: Images,
        *,
        json: Literal[False] = ...,
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> Annotation: ...
    @overload
    def annotate(
        self,
        image: Images,
        *,
        json: Literal[True],
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> AnnotateResponse: ...

    def annotate(
        self,
        image: Images,
        *,
        json: bool = False,
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> Annotation | AnnotateResponse:
        """The image with its detections drawn: an :class:`Annotation` (image bytes and
        detection count), or with ``json=True`` the JSON form (several images allowed)."""
        return self._run(self._annotate_call(image, json, params, deployed_model_id))

    def stream(
        self,
        source: StreamSource,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[StreamParams],
    ) -> Stream:
        """Run a video (path or bytes) or a list of frames (images) through ``/stream``.

        Opens the stream and reads its ``start`` event (retrying like any call until then;
        never after), and returns the :class:`Stream` to iterate.
        """
        request = self._stream_request(source, params, deployed_model_id)
        for attempt in retrying(self.retries):
            with attempt:
                stream = self._open_stream(request)
        return stream

    def _open_stream(self, request: Request) -> Stream:
        response = self.transport.send(request)
        try:
            decoder = self._stream_decoder(request, response)
            lines = iter(response.lines or ())
            for line in lines:
                event = decoder.feed(line)
                if event is not None:
                    return Stream(response, decoder, lines, self._first_event(request, event))
            raise self._no_start(decoder)
        except BaseException:
            response.close()
            raise

    def video(
        self,
        source: VideoSource,
        *,
        deployed_model_id: str | None = None,
        options: VideoOptions | None = None,
        **params: Unpack[StreamParams],
    ) -> VideoStream:
        """A whole video (a file of any size and length), a camera or a live URL, through
        ``/stream`` windows spread over the endpoint's replicas (:mod:`client.video`).

        Iterate the result for :class:`~client.video.VideoFrame` results in source order (boxes
        in source pixels, one track id per object over the whole video); ``.stats`` says where
        the run stands. ``options`` (:class:`~client.video.VideoOptions`): live or not,
        concurrency, window size and overlap. Needs the ``video`` extra (OpenCV).

        Example:
            >>> with client.video("match.mp4", track="bytetrack") as run:
            ...     for frame in run:
            ...         print(frame.index, [d.track_id for d in frame.detections])
        """
        options = options or VideoOptions()
        return VideoStream(
            lambda endpoint: self._video_run(endpoint, source, params, deployed_model_id, options),
            self,
            windows=options.concurrency,
        )

    def batch(
        self,
        inputs: Sequence[str],
        *,
        route: Route = "detect",
        send: Send = "bytes",
        concurrency: int | None = None,
        deployed_model_id: str | None = None,
        annotate_to: str | None = None,
        **params: Unpack[BatchParams],
    ) -> BatchStream:
        """Many images (local paths or ``gs://`` URIs), one call each, many in flight over the
        endpoint's replicas (:mod:`client.batch`): iterate the result for a
        :class:`~client.batch.BatchLine` per input as the calls finish (its results, or its
        error: a bad image is a line, not the end of the run). ``send="uri"``: the server reads
        each ``gs://`` input itself. ``annotate_to``: a folder or ``gs://`` prefix for the drawn
        images.

        Example:
            >>> with client.batch(list_inputs("gs://shots/2026/"), conf=0.5) as run:
            ...     for line in run:
            ...         print(line.input, line.error or len(line.result.detections))
        """
        _validate(ROUTE_PARAMETERS["/" + route], params)
        return BatchStream(
            lambda calls: BatchRun(
                calls,
                inputs,
                params,
                route=route,
                send=send,
                concurrency=concurrency,
                deployed_model_id=deployed_model_id,
                annotate_to=annotate_to,
            ),
            self,
            concurrency,
        )

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio client: the same methods as :class:`Client`, awaited.

    Against Vertex it calls the URLs ``Endpoint.invoke`` builds over httpx with google-auth
    credentials (:class:`~client.transports.AsyncVertexTransport`), so many calls can be in
    flight on one event loop.

    Example:
        >>> async with AsyncClient.from_url("http://127.0.0.1:8080") as client:
        ...     results = await asyncio.gather(*(client.detect(f) for f in frames))
    """

    def __init__(self, endpoint: Any, **options: Any) -> None:
        if isinstance(endpoint, AsyncBaseTransport):
            if "verify" in options:
                raise TypeError(
                    "verify= applies to an aiplatform.Endpoint; give it to the transport instead"
                )
            transport = endpoint
        elif isinstance(endpoint, BaseTransport):
            raise TypeError(
                f"AsyncClient needs an async transport, not the blocking "
                f"{type(endpoint).__qualname__} (use AsyncHttpTransport or AsyncVertexTransport, "
                "or Client)"
            )
        elif hasattr(endpoint, "invoke"):
            transport = AsyncVertexTransport.from_endpoint(
                endpoint, verify=options.pop("verify", None)
            )
        else:
            raise TypeError(
                f"AsyncClient needs an aiplatform.Endpoint or an AsyncBaseTransport, not "
                f"{type(endpoint).__qualname__} (for an endpoint id use AsyncClient.from_vertex, "
                "for a URL AsyncClient.from_url)"
            )
        super().__init__(transport, **options)

    @classmethod
    def from_vertex(
        cls,
        *,
        endpoint: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        api_endpoint: str | None = None,
        api_transport: str | None = None,
        verify: Any = None,
        **options: Any,
    ) -> AsyncClient:
        """Reads the endpoint once through the SDK (sync), then calls it with httpx."""
        ep = vertex.endpoint(
            endpoint,
            project=project,
            location=location,
            api_endpoint=api_endpoint,
            credentials=credentials,
            api_transport=api_transport,
        )
        return cls(AsyncVertexTransport.from_endpoint(ep, verify=verify), **options)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        verify: Any = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> AsyncClient:
        return cls(AsyncHttpTransport(url, verify=verify, headers=headers), **options)

    async def _send(self, request: Request) -> Response:
        result = self.transport.send(request)  # MockTransport's may be a plain Response
        return await result if inspect.isawaitable(result) else result

    async def _run(self, call: _Call) -> Any:
        if call.rebuild is not None:
            if self.server_limits is None:
                try:
                    self._learnt_limits(await self.models())
                except errors.VertexYoloError:  # the server answers the image itself
                    self._learnt_limits(None)
            call = call.rebuild()
        async for attempt in async_retrying(self.retries):
            with attempt:
                response = await self._send(call.request)
                self._raise_for_status(call.request, response)
        return call.decode(response)

    async def models(self, *, deployed_model_id: str | None = None) -> ModelList:
        return await self._run(self._models_call(deployed_model_id))

    async def detect(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        return await self._run(self._images_call("/detect", images, params, deployed_model_id))

    async def segment(
        self,
        images: Images,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[SegmentParams],
    ) -> InferenceResponse:
        return await self._run(self._images_call("/segment", images, params, deployed_model_id))

    async def classify(
        self,
        images: Images,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[ClassifyParams],
    ) -> ClassifyResponse:
        return await self._run(self._images_call("/classify", images, params, deployed_model_id))

    async def pose(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        return await self._run(self._images_call("/pose", images, params, deployed_model_id))

    async def obb(
        self, images: Images, *, deployed_model_id: str | None = None, **params: Unpack[ImageParams]
    ) -> InferenceResponse:
        return await self._run(self._images_call("/obb", images, params, deployed_model_id))

    @overload
    async def annotate(
        self,
        image: Images,
        *,
        json: Literal[False] = ...,
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> Annotation: ...
    @overload
    async def annotate(
        self,
        image: Images,
        *,
        json: Literal[True],
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> AnnotateResponse: ...

    async def annotate(
        self,
        image: Images,
        *,
        json: bool = False,
        deployed_model_id: str | None = None,
        **params: Unpack[AnnotateParams],
    ) -> Annotation | AnnotateResponse:
        return await self._run(self._annotate_call(image, json, params, deployed_model_id))

    async def stream(
        self,
        source: StreamSource,
        *,
        deployed_model_id: str | None = None,
        **params: Unpack[StreamParams],
    ) -> AsyncStream:
        request = self._stream_request(source, params, deployed_model_id)
        async for attempt in async_retrying(self.retries):
            with attempt:
                stream = await self._open_stream(request)
        return stream

    async def _open_stream(self, request: Request) -> AsyncStream:
        response = await self._send(request)
        try:
            decoder = self._stream_decoder(request, response)
            if response.alines is None:
                raise errors.StreamError("the transport returned no stream")
            lines = aiter(response.alines)
            async for line in lines:
                event = decoder.feed(line)
                if event is not None:
                    return AsyncStream(response, decoder, lines, self._first_event(request, event))
            raise self._no_start(decoder)
        except BaseException:
            await response.aclose()
            raise

    def video(
        self,
        source: VideoSource,
        *,
        deployed_model_id: str | None = None,
        options: VideoOptions | None = None,
        **params: Unpack[StreamParams],
    ) -> AsyncVideoStream:
        """:meth:`Client.video` on this loop: ``async for frame in client.video(...)``."""
        run = self._video_run(
            AsyncCalls(self), source, params, deployed_model_id, options or VideoOptions()
        )
        return AsyncVideoStream(run)

    def batch(
        self,
        inputs: Sequence[str],
        *,
        route: Route = "detect",
        send: Send = "bytes",
        concurrency: int | None = None,
        deployed_model_id: str | None = None,
        annotate_to: str | None = None,
        **params: Unpack[BatchParams],
    ) -> AsyncBatchStream:
        """:meth:`Client.batch` on this loop: ``async for line in client.batch(...)``."""
        _validate(ROUTE_PARAMETERS["/" + route], params)
        run = BatchRun(
            AsyncCalls(self),
            inputs,
            params,
            route=route,
            send=send,
            concurrency=concurrency,
            deployed_model_id=deployed_model_id,
            annotate_to=annotate_to,
        )
        return AsyncBatchStream(run)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
