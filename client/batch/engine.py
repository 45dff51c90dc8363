"""Batch inference over many images: one call per image, many in flight, a line per image.

:class:`BatchRun` (asyncio) sends each input to its route (``/detect``, ``/segment``, ``/classify``,
``/pose`` or ``/obb``; ``/annotate`` with that route's model when the drawn images are kept), up to ``concurrency`` calls at once: by default two per replica seen
answering plus one (at most 32), so every replica stays busy. Every call goes to one deployed
model: the pinned one, or the one that answered the first call. An input is sent as its bytes
(read here, from a local path or Cloud Storage) or, ``send="uri"``, as its ``gs://`` URI for
the server to read.

Each input gives one :class:`BatchLine`, in the order calls finish: its results, or its error. An
input the server refuses for itself (:data:`INPUT_ERRORS`: a corrupt image, an object missing)
or this client cannot read (missing, forbidden) is an error line, not the end of the job; a
failure no other input would escape (the endpoint unreachable, 5xx or 429 after the client's
retries, a refused token, a bad parameter) ends the run, and a run with the same
arguments carries on (:mod:`client.batch.output`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol, get_args

import msgspec

from client import errors
from client.batch.inputs import read_input, write_output
from client.schema import (
    AnnotateResponse,
    ClassifyResponse,
    ClassifyResult,
    ImageResult,
    InferenceResponse,
    ModelList,
    ProblemCode,
)

Route = Literal["detect", "segment", "classify", "pose", "obb"]
ROUTES: tuple[str, ...] = get_args(Route)
Send = Literal["bytes", "uri"]
MAX_CONCURRENCY = 32
# The server's problem codes that are about one input: that input's error line. Any other
# error (5xx, 429, a refused token, a bad parameter, a bucket the server may not read) would
# fail every input alike: it ends the run, and a run with the same arguments carries on.
INPUT_ERRORS: frozenset[ProblemCode] = frozenset(
    {
        "invalid-image",
        "payload-too-large",
        "unsupported-media-type",
        "object-not-found",
        "object-forbidden",
    }
)


def unreadable(exc: BaseException) -> bool:
    """Whether a read of one input failed for that input alone (missing, a folder, refused)."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return True
    try:
        from google.api_core import exceptions
    except ImportError:
        return False
    return isinstance(exc, exceptions.NotFound | exceptions.Forbidden)


class BatchEndpoint(Protocol):
    """What the engine needs of a client."""

    async def models(self, deployed_model_id: str | None) -> ModelList: ...

    async def infer(
        self,
        route: str,
        image: bytes | str,
        deployed_model_id: str,
        params: Mapping[str, Any],
    ) -> InferenceResponse | ClassifyResponse | AnnotateResponse: ...


class BatchError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why an input has no result: the server's problem (status, code, detail), or this
    client's (no status)."""

    detail: str
    code: str | None = None
    status: int | None = None


class BatchLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One input's line: its path or URI, who answered, and its results or its error;
    ``annotated``: where its drawn image was written; ``params``: the parameters sent.

    Made by :func:`result_line`, :func:`problem_line` and :func:`unreadable_line` (the local
    engine and the Beam handler, :mod:`client.beam`, alike)."""

    input: str
    deployed_model_id: str | None = None
    model: str | None = None
    version: str | None = None
    replica_id: str | None = None
    result: ImageResult | ClassifyResult | None = None  # ClassifyResult on route classify
    error: BatchError | None = None
    annotated: str | None = None
    params: dict[str, Any] | None = None  # the inference parameters sent (none: the defaults)


class BatchStats(msgspec.Struct, kw_only=True):
    """Where a run stands."""

    inputs: int
    deployed_model_id: str | None = None
    done: int = 0  # lines made, errors included
    errors: dict[str, int] = {}  # by problem code
    in_flight: int = 0
    replicas: dict[str, int] = {}
    class_counts: dict[str, int] = {}
    elapsed_s: float = 0.0
    images_per_s: float = 0.0


def given(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The parameters given (not None), as a line records them; None when none were."""
    found = {k: v for k, v in (params or {}).items() if v is not None}
    return found or None


def result_line(
    name: str,
    answer: InferenceResponse | ClassifyResponse | AnnotateResponse,
    result: ImageResult | ClassifyResult,
    params: Mapping[str, Any] | None = None,
    annotated: str | None = None,
) -> BatchLine:
    """The line of an input that has its results: ``result``, one of ``answer``'s."""
    return BatchLine(
        input=name,
        deployed_model_id=answer.deployed_model_id,
        model=answer.model,
        version=answer.version,
        replica_id=answer.replica_id,
        result=result,
        annotated=annotated,
        params=given(params),
    )


def problem_line(
    name: str,
    exc: errors.APIError,
    deployed_model_id: str | None,
    params: Mapping[str, Any] | None = None,
) -> BatchLine | None:
    """The error line of an input the server refused for itself (:data:`INPUT_ERRORS`); None
    for any other error, which no input would escape (it ends the run)."""
    problem = exc.problem
    if problem is None or problem.code not in INPUT_ERRORS:
        return None
    return BatchLine(
        input=name,
        deployed_model_id=deployed_model_id,
        error=BatchError(status=exc.status, code=problem.code, detail=problem.detail),
        params=given(params),
    )


def unreadable_line(
    name: str, exc: BaseException, params: Mapping[str, Any] | None = None
) -> BatchLine:
    """The error line of an input this client cannot read (see :func:`unreadable`)."""
    return BatchLine(
        input=name,
        error=BatchError(detail=f"cannot read {name}: {exc}"),
        params=given(params),
    )


def annotated_name(folder: str, name: str, media_type: str) -> str:
    """Where an input's drawn image goes: its file stem, a hash of its full name (two inputs
    never share one), the suffix of its media type."""
    stem = PurePosixPath(name).stem or "image"
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    suffix = ".png" if media_type == "image/png" else ".jpg"
    return f"{folder.rstrip('/')}/{stem}-{digest}{suffix}"


class BatchRun:
    """One batch through a :class:`BatchEndpoint`: iterate :meth:`lines`."""

    def __init__(
        self,
        endpoint: BatchEndpoint,
        inputs: Sequence[str],
        params: Mapping[str, Any],
        *,
        route: Route = "detect",
        send: Send = "bytes",
        concurrency: int | None = None,
        deployed_model_id: str | None = None,
        annotate_to: str | None = None,
    ) -> None:
        if route not in ROUTES:
            raise errors.ParameterError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
        if send not in ("bytes", "uri"):
            raise errors.ParameterError(f"send must be bytes or uri, not {send!r}")
        if send == "uri" and (local := [i for i in inputs if not i.startswith("gs://")]):
            raise errors.ParameterError(
                f"send=uri sends gs:// URIs for the server to read; {local[0]} is a local file "
                "(send its bytes)"
            )
        if concurrency is not None and not 1 <= concurrency <= 256:
            raise errors.ParameterError(f"concurrency {concurrency}: 1 to 256")
        self.endpoint, self.inputs, self.params = endpoint, list(inputs), dict(params)
        self.route, self.send, self.fixed = route, send, concurrency
        self.pinned, self.annotate_to = deployed_model_id, annotate_to
        self.stats = BatchStats(inputs=len(self.inputs))
        self._classes: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    @property
    def concurrency(self) -> int:
        if self.fixed:
            return self.fixed
        return min(MAX_CONCURRENCY, max(2, 2 * len(self.stats.replicas) + 1))

    async def lines(self) -> AsyncGenerator[BatchLine, None]:
        """The lines, as the calls finish."""
        started = time.monotonic()
        listing = await self.endpoint.models(self.pinned)
        self.pinned = self.pinned or listing.deployed_model_id
        if self.annotate_to and self.route != "detect" and "model" not in self.params:
            # /annotate draws with any model: name the route's, as the route itself would pick
            model = next((m.name for m in listing.models if m.task == self.route), None)
            if model is None:
                raise errors.ParameterError(
                    f"route {self.route}: deployed model {self.pinned} serves no {self.route} "
                    f"model ({', '.join(f'{m.name} ({m.task})' for m in listing.models)})"
                )
            self.params["model"] = model
        self.stats.deployed_model_id = self.pinned
        pending: set[asyncio.Task[BatchLine]] = set()
        queue = iter(self.inputs)
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < self.concurrency:
                    name = next(queue, None)
                    if name is None:
                        exhausted = True
                        break
                    pending.add(asyncio.ensure_future(self._one(name)))
                self.stats.in_flight = len(pending)
                if not pending:
                    break
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    line = task.result()  # a failure of the run raises here
                    self._count(line, started)
                    yield line
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.stats.in_flight = 0

    # -- the run's face (client._bridge.Run) ---------------------------------------------------

    def items(self) -> AsyncGenerator[BatchLine, None]:
        return self.lines()

    def finish(self) -> None:
        """Nothing to add once every line is out."""

    def release(self) -> None:
        """A batch holds nothing before it starts."""

    def _count(self, line: BatchLine, started: float) -> None:
        stats = self.stats
        stats.done += 1
        if line.error is not None:
            self._errors[line.error.code or "unreadable"] += 1
            stats.errors = dict(self._errors)
        if isinstance(line.result, ClassifyResult):
            self._classes[line.result.classes[0].class_name] += 1  # an image counts as its top
        elif line.result is not None:
            self._classes.update(d.class_name for d in line.result.detections)
        stats.class_counts = dict(self._classes)
        if line.replica_id:
            stats.replicas[line.replica_id] = stats.replicas.get(line.replica_id, 0) + 1
        stats.elapsed_s = time.monotonic() - started
        stats.images_per_s = stats.done / max(stats.elapsed_s, 1e-9)

    async def _one(self, name: str) -> BatchLine:
        assert self.pinned is not None
        image: bytes | str = name
        if self.send == "bytes":
            try:
                image = await asyncio.to_thread(read_input, name)
            except Exception as exc:
                if not unreadable(exc):
                    raise  # Cloud Storage down, credentials refused: no input would escape it
                return unreadable_line(name, exc, self.params)
        route = "annotate" if self.annotate_to else self.route
        try:
            answer = await self.endpoint.infer(route, image, self.pinned, self.params)
        except errors.APIError as exc:
            line = problem_line(name, exc, self.pinned, self.params)
            if line is None:
                raise  # 5xx, 429, a refused token, a bad parameter: no input would escape it
            return line
        result: ImageResult | ClassifyResult
        if isinstance(answer, AnnotateResponse):
            drawn = answer.results[0]
            if drawn.classes is not None:
                result = ClassifyResult(
                    width=drawn.width, height=drawn.height, classes=drawn.classes
                )
            else:
                result = ImageResult(
                    width=drawn.width, height=drawn.height, detections=drawn.detections
                )
            assert self.annotate_to is not None
            where = annotated_name(self.annotate_to, name, drawn.media_type)
            await asyncio.to_thread(
                write_output, where, base64.b64decode(drawn.image), drawn.media_type
            )
        else:
            result, where = answer.results[0], None
        return result_line(name, answer, result, self.params, where)
