"""The one request front end every inference route goes through, ``/stream`` included:

    read inputs → parameters → model → admit (once) → read gs:// inputs

A :class:`Route` says what a route takes (its parameter Struct, the model task it needs, how its
body is read); :func:`admitted` reads and checks the request against it, picks the model, and
holds a place in that model's queue (429 ``overloaded`` when it is full) while the route does its
work: image routes decode and predict under it (:mod:`app.pipeline`), ``/stream`` opens and
probes its video under it, then runs its frames (:mod:`app.stream`). Every refusal (a bad body,
an unknown parameter, an unknown model or class, a full queue) happens here, before any pixel is
decoded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from litestar import Request

from app.config import Settings
from app.errors import BadRequest
from app.inputs import Inputs, fetch, parse_parameters, read_images, read_stream
from app.registry import LoadedModel, Registry
from client.schema import ModelParameters

P = TypeVar("P", bound=ModelParameters)


@dataclass(frozen=True)
class Route(Generic[P]):
    """What one inference route takes.

    Attributes:
        path: the route (``/detect``), as errors name it.
        parameters: the Struct its parameters must fit; any other parameter is refused.
        tasks: the model tasks it takes (``("segment",)``), or None for any model.
        aliases: other names a parameter may be given by (``/predict``'s ``confidence``).
        stream: the body is a video or a run of frames (``/stream``), not images.
        check: further checks of the parameters against the model and settings, before any
            work (``/stream``'s tracking and frame limits).
    """

    path: str
    parameters: type[P]
    tasks: tuple[str, ...] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False
    check: Callable[[P, LoadedModel, Settings], None] | None = None


@dataclass
class Admitted(Generic[P]):
    """A request that passed the front end and holds a place in its model's queue."""

    route: Route[P]
    inputs: Inputs
    params: P
    model: LoadedModel
    class_ids: list[int] | None
    imgsz: int  # the input size the model runs this request at
    started: float  # time.perf_counter() when the request began to be read


@asynccontextmanager
async def admitted(
    request: Request,
    registry: Registry,
    settings: Settings,
    route: Route[P],
    *,
    one_image: str | None = None,
) -> AsyncIterator[Admitted[P]]:
    """Read, check and admit ``request`` for ``route``; the place in the queue is held for the
    block.

    ``one_image``: the route answers a single image; this is the 400's hint when there are more.
    """
    started = time.perf_counter()
    if route.stream:
        inputs = await read_stream(request, settings)
    else:
        inputs = await read_images(request, settings)
    if one_image and len(inputs.blobs) > 1:
        raise BadRequest(
            f"{route.path} answers one image but the request has {len(inputs.blobs)}; {one_image}"
        )
    params = parse_parameters(inputs.params, route.parameters, route.aliases)
    model = registry.get(params.model, tasks=route.tasks, route=route.path)
    class_ids = model.class_ids(getattr(params, "classes", None))
    imgsz = model.input_size(params.imgsz)  # 400 when a static export is asked for another size
    if route.check is not None:
        route.check(params, model, settings)
    with model.admit():  # 429 before any work when the model's queue is full
        try:
            await fetch(inputs, settings)  # gs:// inputs: their buckets were checked when read
            yield Admitted(route, inputs, params, model, class_ids, imgsz, started)
        finally:
            if inputs.video_path is not None:  # opened (and unlinked) by then, unless it failed
                inputs.video_path.unlink(missing_ok=True)
