"""The image routes' pipeline: front end → decode → infer → encode.

``/detect``, ``/segment``, ``/annotate`` and ``/predict`` differ only in their :class:`Route`
and in how they encode the results (``app/routes/images.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from litestar import Request

from app.config import Settings
from app.frontend import Route, admitted
from app.images import DecodedImage, Opened, decode_opened, open_images
from app.metrics import IMAGES, INFERENCE_SECONDS
from app.registry import LoadedModel, Registry
from app.results import RESCALABLE_TASKS, restore_size
from client.schema import SERVER_TIMING, ModelParameters, format_server_timing

P = TypeVar("P", bound=ModelParameters)
T = TypeVar("T")


#: the most pixels a request alone in the server decodes on the event loop (about 3 ms of
#: JPEG decoding on the project's machine; larger images, or any image while other requests are
#: in flight, go to a worker thread)
INLINE_PIXELS = 2_500_000


@dataclass
class Inferred(Generic[P]):
    """A request after inference: the model used, its parameters and the raw results."""

    model: LoadedModel
    params: P
    results: list[Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    registry: Registry | None = None

    def headers(self) -> dict[str, str]:
        """Headers every inference response carries (request and deployed model ids: all)."""
        return {
            "X-Model-Name": self.model.name,
            "X-Model-Version": self.model.version,
            SERVER_TIMING: format_server_timing(self.timings_ms),
        }

    async def encode(self, fn: Callable[[], T], small: bool = True) -> T:
        """Run an encoder and record its time: a ``small`` one (results to a Struct) on the
        event loop when no other request is in flight (a thread's hop there and back costs
        more than it), anything else in a worker thread."""
        started = time.perf_counter()
        if small and self.registry is not None and self.registry.in_flight() == 0:
            out = fn()
        else:
            out = await anyio.to_thread.run_sync(fn)
        self.timings_ms["encode"] = (time.perf_counter() - started) * 1000
        return out


async def decode(opened: list[Opened], draft_to: int | None, alone: bool) -> list[DecodedImage]:
    """The images' pixels: on the event loop for a request alone in the server with at most
    :data:`INLINE_PIXELS` pixels (the hop to a thread and back is then most of the cost at
    concurrency 1), else in a worker thread (the loop stays free for other requests)."""
    if alone and sum(o.pixels for o in opened) <= INLINE_PIXELS:
        return decode_opened(opened, draft_to)
    return await anyio.to_thread.run_sync(decode_opened, opened, draft_to)


async def infer(
    request: Request,
    registry: Registry,
    settings: Settings,
    route: Route[P],
    *,
    one_image: str | None = None,
    draft: bool = True,
) -> Inferred[P]:
    """Admit the request (:func:`app.frontend.admitted`), decode its images, predict.

    ``one_image``: see :func:`~app.frontend.admitted`. ``draft``: a JPEG much larger than the
    model's input may be decoded reduced (results are scaled back to full size); a route that
    draws on the image turns it off.
    """
    async with admitted(request, registry, settings, route, one_image=one_image) as job:
        model = job.model
        reduce = draft and settings.jpeg_draft and model.task in RESCALABLE_TASKS
        opened = open_images(job.inputs.blobs, settings.max_pixels)  # headers: cheap
        images = await decode(
            opened, job.imgsz if reduce else None, alone=registry.in_flight() == 1
        )
        decoded = time.perf_counter()
        results = await model.predict([im.bgr for im in images], job.params, job.class_ids)
    for result, image in zip(results, images, strict=True):
        if image.reduced:
            restore_size(result, image.width, image.height)
    done = time.perf_counter()
    INFERENCE_SECONDS.labels(model.name, route.path).observe(done - decoded)
    IMAGES.labels(model.name, route.path).inc(len(images))
    timings = {"decode": (decoded - job.started) * 1000, "inference": (done - decoded) * 1000}
    return Inferred(model, job.params, results, timings, registry)
